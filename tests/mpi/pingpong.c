/* tests/mpi/pingpong.c - two-rank MPI ping-pong between rank 0 and rank 1.
 * Usage: pingpong [ITERATIONS]   (default 1000; also PINGPONG_ITERS)
 *  1. a 1 MiB message from rank 0 to rank 1 and back, every byte checked on both sides;
 *  2. latency: ITERATIONS round trips of 8 B, median of the one-way time (round trip / 2);
 *  3. bandwidth: max(ITERATIONS/10, 10) round trips of 1 MiB, median one-way bandwidth.
 * Rank 0 prints one parseable line:
 *   pingpong ranks=2 nodes=N0,N1 iters=I lat_8B_us=L bw_1MiB_MBps=B check_1MiB=ok
 * (MB = 10^6 bytes). Exits 1 on a byte mismatch (after printing "pingpong: MISMATCH ..." on stderr),
 * 2 on bad usage or when the world does not have exactly 2 ranks. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BIG (1024 * 1024)
#define SMALL 8

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The byte expected at offset i of a message generated with seed s. */
static unsigned char pattern(size_t i, unsigned s) { return (unsigned char)((i * 2654435761u + s) >> 7); }

/* Check buf against the pattern of seed s; print the first mismatch. Returns the number of bad bytes. */
static long check(const unsigned char *buf, size_t n, unsigned s, int rank, const char *what) {
  long bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (buf[i] != pattern(i, s)) {
      if (bad == 0)
        fprintf(stderr, "pingpong: MISMATCH rank %d %s: byte %zu is 0x%02x, want 0x%02x\n", rank, what, i,
                buf[i], pattern(i, s));
      bad++;
    }
  }
  return bad;
}

int main(int argc, char **argv) {
  int rank, size, iters = 1000;
  const char *env = getenv("PINGPONG_ITERS");
  char node[256] = "?", peer[256] = "?";
  MPI_Status st;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc > 1) env = argv[1];
  if (env != NULL) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*env == '\0' || *end != '\0' || v < 1 || v > 10000000) {
      if (rank == 0) fprintf(stderr, "pingpong: bad iteration count '%s' (1-10000000)\n", env);
      MPI_Finalize();
      return 2;
    }
    iters = (int)v;
  }
  if (size != 2) {
    if (rank == 0) fprintf(stderr, "pingpong: needs exactly 2 ranks, got %d\n", size);
    MPI_Finalize();
    return 2;
  }
  const char *n = getenv("SLURMD_NODENAME");
  if (n != NULL && *n != '\0')
    snprintf(node, sizeof node, "%s", n);
  else
    gethostname(node, sizeof node - 1);
  int other = 1 - rank;
  MPI_Sendrecv(node, sizeof node, MPI_CHAR, other, 9, peer, sizeof peer, MPI_CHAR, other, 9, MPI_COMM_WORLD, &st);

  unsigned char *buf = malloc(BIG);
  int big_iters = iters / 10 < 10 ? 10 : iters / 10;
  int nt = iters > big_iters ? iters : big_iters;
  double *t = malloc(sizeof(double) * nt);
  if (buf == NULL || t == NULL) {
    fprintf(stderr, "pingpong: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 3);
  }

  /* 1. checked 1 MiB there and back: rank 1 checks seed 1, answers with seed 2, rank 0 checks it. */
  long bad = 0;
  if (rank == 0) {
    for (size_t i = 0; i < BIG; i++) buf[i] = pattern(i, 1);
    MPI_Send(buf, BIG, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
    memset(buf, 0, BIG);
    MPI_Recv(buf, BIG, MPI_BYTE, 1, 2, MPI_COMM_WORLD, &st);
    bad = check(buf, BIG, 2, rank, "reply");
  } else {
    memset(buf, 0, BIG);
    MPI_Recv(buf, BIG, MPI_BYTE, 0, 1, MPI_COMM_WORLD, &st);
    bad = check(buf, BIG, 1, rank, "message");
    for (size_t i = 0; i < BIG; i++) buf[i] = pattern(i, 2);
    MPI_Send(buf, BIG, MPI_BYTE, 0, 2, MPI_COMM_WORLD);
  }
  long total_bad = 0;
  MPI_Allreduce(&bad, &total_bad, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (total_bad != 0) {
    if (rank == 0) fprintf(stderr, "pingpong: MISMATCH %ld bad byte(s) in the checked 1 MiB exchange\n", total_bad);
    MPI_Finalize();
    return 1;
  }

  /* 2. latency, 3. bandwidth: the same round-trip loop at two sizes, a few warm-up rounds first. */
  double med[2];
  int sizes[2] = {SMALL, BIG}, counts[2] = {iters, big_iters};
  for (int k = 0; k < 2; k++) {
    for (int i = -5; i < counts[k]; i++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      if (rank == 0) {
        MPI_Send(buf, sizes[k], MPI_BYTE, 1, 3, MPI_COMM_WORLD);
        MPI_Recv(buf, sizes[k], MPI_BYTE, 1, 4, MPI_COMM_WORLD, &st);
      } else {
        MPI_Recv(buf, sizes[k], MPI_BYTE, 0, 3, MPI_COMM_WORLD, &st);
        MPI_Send(buf, sizes[k], MPI_BYTE, 0, 4, MPI_COMM_WORLD);
      }
      if (i >= 0) t[i] = (MPI_Wtime() - t0) / 2;
    }
    med[k] = median(t, counts[k]);
  }
  if (rank == 0) {
    printf("pingpong ranks=2 nodes=%s,%s iters=%d lat_8B_us=%.2f bw_1MiB_MBps=%.1f check_1MiB=ok\n", node, peer,
           iters, med[0] * 1e6, BIG / med[1] / 1e6);
    fflush(stdout);
  }
  free(t);
  free(buf);
  MPI_Finalize();
  return 0;
}
