// HTTP workloads with known answers for tests/http.rs, on Go's net/http.
//
// server PORT_FILE: listens on 127.0.0.1; /ok answers 200, /fail 503, /slow sleeps 300 ms
// then answers 202 (its own series). Writes its port to PORT_FILE once listening.
//
// client PORT N_OK N_FAIL N_SLOW: one http.Client (keep-alive, one connection at a time)
// sends the requests in turn, reading every body, and prints "done".
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func server(portFile string) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	body := make([]byte, 64)
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		w.Write(body)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.WriteHeader(202)
		w.Write(body)
	})
	port := ln.Addr().(*net.TCPAddr).Port
	tmp := portFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(tmp, portFile); err != nil {
		panic(err)
	}
	panic(http.Serve(ln, mux))
}

func client(port string, counts []int) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for i, path := range []string{"/ok", "/fail", "/slow"} {
		for n := 0; n < counts[i]; n++ {
			resp, err := c.Get("http://127.0.0.1:" + port + path)
			if err != nil {
				panic(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	fmt.Println("done")
}

func main() {
	if os.Args[1] == "server" {
		server(os.Args[2])
		return
	}
	var counts []int
	for _, a := range os.Args[3:6] {
		n, err := strconv.Atoi(a)
		if err != nil {
			panic(err)
		}
		counts = append(counts, n)
	}
	client(os.Args[2], counts)
}
