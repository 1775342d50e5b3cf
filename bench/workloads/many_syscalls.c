/* Makes each of 12 harmless syscalls 100 times (1,200 calls: past the default
 * services.admit_after_syscalls, so the process is named at once), then waits in pause()
 * until killed. Under 100 names it gives the agent about 100 x 12 syscall histograms. */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <unistd.h>

int main(void) {
    struct sysinfo si;
    for (int i = 0; i < 100; i++) {
        syscall(SYS_getppid);
        syscall(SYS_getpid);
        syscall(SYS_getuid);
        syscall(SYS_getgid);
        syscall(SYS_geteuid);
        syscall(SYS_getegid);
        syscall(SYS_getpgrp);
        syscall(SYS_getpgid, 0);
        syscall(SYS_getsid, 0);
        syscall(SYS_sched_yield);
        syscall(SYS_getpriority, PRIO_PROCESS, 0);
        syscall(SYS_sysinfo, &si);
    }
    pause();
    return 0;
}
