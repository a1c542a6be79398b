/*
 * The C reference for `npm run bench`: a minimal VPN over TCP of the same
 * design as `tunnel-gso vpn --wire gso`. A tun device with the virtio-net
 * header and TSO/USO; each frame read from it (header + super-packet) goes
 * whole over TCP behind a 4-byte big-endian length, and the peer writes it
 * whole into its own tun. Two blocking threads, no handshake, no checks
 * beyond what keeps it from crashing: a yardstick, not a product.
 *
 * usage: ref-relay server LISTEN_IP PORT TUN_NAME
 *        ref-relay client SERVER_IP PORT TUN_NAME
 * The device is created; the caller configures its address with `ip`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FRAME (10 + 65535 + 256)

static int tun_fd, sock_fd;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r == 0) return -1;
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 0;
}

static void *tun_to_sock(void *arg) {
  (void)arg;
  static char buf[MAX_FRAME];
  for (;;) {
    ssize_t n = read(tun_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read tun");
    }
    uint32_t len = htonl((uint32_t)n);
    struct iovec iov[2] = {{&len, 4}, {buf, (size_t)n}};
    size_t total = 4 + (size_t)n, sent = 0;
    while (sent < total) {
      ssize_t w = writev(sock_fd, iov, 2);
      if (w < 0) {
        if (errno == EINTR) continue;
        exit(0);
      }
      sent += (size_t)w;
      /* Advance the iovecs past what was written. */
      size_t adv = (size_t)w;
      for (int i = 0; i < 2; i++) {
        size_t take = adv < iov[i].iov_len ? adv : iov[i].iov_len;
        iov[i].iov_base = (char *)iov[i].iov_base + take;
        iov[i].iov_len -= take;
        adv -= take;
      }
    }
  }
  return NULL;
}

static void *sock_to_tun(void *arg) {
  (void)arg;
  static char buf[MAX_FRAME];
  for (;;) {
    uint32_t len;
    if (read_full(sock_fd, &len, 4) < 0) exit(0);
    len = ntohl(len);
    if (len < 10 || len > MAX_FRAME) {
      fprintf(stderr, "bad frame length %u\n", len);
      exit(1);
    }
    if (read_full(sock_fd, buf, len) < 0) exit(0);
    /* A refused frame (device down: EIO; bad frame: EINVAL) is dropped, as a router would. */
    (void)!write(tun_fd, buf, len);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s server|client IP PORT TUN\n", argv[0]);
    return 2;
  }
  tun_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tun_fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, argv[4], IFNAMSIZ - 1);
  if (ioctl(tun_fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | 0x20 /* USO4 */ | 0x40 /* USO6 */;
  if (ioctl(tun_fd, TUNSETOFFLOAD, off) < 0 && ioctl(tun_fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0)
    die("TUNSETOFFLOAD");

  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) die("address");
  int one = 1;
  if (strcmp(argv[1], "server") == 0) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(l, 1) < 0) die("listen");
    fprintf(stderr, "listening\n");
    sock_fd = accept(l, NULL, NULL);
    if (sock_fd < 0) die("accept");
  } else {
    sock_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(sock_fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
  }
  setsockopt(sock_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fprintf(stderr, "connected\n");
  pthread_t a, b;
  pthread_create(&a, NULL, tun_to_sock, NULL);
  pthread_create(&b, NULL, sock_to_tun, NULL);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  return 0;
}
