/* PID 1 of the pxe-server qemu boot tests' initramfs: prints a marker and
 * the kernel command line on the console, then powers the VM off.
 * Built statically by pxe-server/tests/qemu_boot.rs: gcc -static -Os. */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	char buf[4096];
	ssize_t n = 0;
	int fd;

	mount("proc", "/proc", "proc", 0, "");
	fd = open("/proc/cmdline", O_RDONLY);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
	}
	if (n < 0)
		n = 0;
	buf[n] = 0;
	fd = open("/dev/console", O_WRONLY);
	if (fd < 0)
		fd = 1;
	const char *m = "\n" MARKER " cmdline: ";
	write(fd, m, strlen(m));
	write(fd, buf, strlen(buf));
	write(fd, "\n", 1);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
