/* The pod sandbox's process (what Kubernetes' own pause image runs): holds the pod's namespaces, reaps
 * zombies, exits on SIGINT/SIGTERM. Built static with musl-gcc by tools/images.sh: the node needs a sandbox image
 * and no registry is reachable here. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 1); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
