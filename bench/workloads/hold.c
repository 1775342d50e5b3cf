/* Sleeps until a signal ends it: a live process for the scale benchmark. */
#include <unistd.h>

int main(void) {
    pause();
    return 0;
}
