module example.invalid/steadfast/clients/go

go 1.19
