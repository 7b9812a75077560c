/* tests/mpi/hello.c - one line per rank: rank, size, Slurm node, and an MPI_Allreduce of the ranks.
 * Output (one line per rank, parseable):
 *   hello rank=R size=N node=NODE host=HOST pid=PID sum=S want=W
 * where S is the MPI_Allreduce(MPI_SUM) of all ranks and W = N*(N-1)/2. Exits 1 when S != W. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int rank = -1, size = -1;
  long sum = -1, mine;
  char host[256] = "?";
  const char *node;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  gethostname(host, sizeof host - 1);
  node = getenv("SLURMD_NODENAME");
  if (node == NULL || *node == '\0') node = host;
  mine = rank;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  long want = (long)size * (size - 1) / 2;
  printf("hello rank=%d size=%d node=%s host=%s pid=%ld sum=%ld want=%ld\n", rank, size, node, host,
         (long)getpid(), sum, want);
  fflush(stdout);
  MPI_Finalize();
  return sum == want ? 0 : 1;
}
