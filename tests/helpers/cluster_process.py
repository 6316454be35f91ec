"""One process of a simulated cluster: a launcher's environment as JAX reads it, then qagan_jax.cluster.initialize.

    python tests/helpers/cluster_process.py KIND INDEX COUNT PORT [MODE]

KIND is a cluster environment JAX detects: slurm and openmpi (their
launchers' variables), gke_tpu (GKE's TPU variables) and gce_tpu (a Cloud
TPU VM's metadata server, served here on loopback for this worker); or
kubernetes (a pod's variable, without the kubernetes package), none, and
missed_tpu (a TPU runtime that sees COUNT hosts with no cluster found).
The TPU kinds also tell JAX it runs on a Cloud TPU VM, which it otherwise
learns from the TPU it finds. The processes meet at 127.0.0.1:PORT
(JAX_COORDINATOR_PORT, which JAX's detection honours for every kind);
MODE is --distributed's ('auto' by default).

Prints one JSON line: whether jax.distributed started, the process index
and count, the indices gathered from every process (a collective through
the cluster), the ClusterError's message if one was raised, and what the
package logged.
"""

import http.server
import json
import logging
import os
import sys
import threading


def metadata_server(attributes: dict[str, str]) -> str:
  """Serves a GCE metadata server's instance attributes on loopback; its
  address."""

  class Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      name = self.path.rsplit('/', 1)[-1]
      found = name in attributes and self.headers.get(
          'Metadata-Flavor') == 'Google'
      body = attributes[name].encode() if found else b''
      self.send_response(200 if found else 404)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return f'127.0.0.1:{server.server_address[1]}'


def simulate(kind: str, index: int, count: int, port: int) -> None:
  env = os.environ
  env['JAX_COORDINATOR_PORT'] = str(port)
  if kind == 'slurm':
    env.update(SLURM_JOB_ID='4242', SLURM_STEP_NODELIST='localhost',
               SLURM_NTASKS=str(count), SLURM_PROCID=str(index),
               SLURM_LOCALID=str(index), SLURM_STEP_NUM_NODES='1')
  elif kind == 'openmpi':
    env.update(OMPI_MCA_orte_hnp_uri='1531576320.0;tcp://127.0.0.1:34911',
               OMPI_COMM_WORLD_SIZE=str(count),
               OMPI_COMM_WORLD_RANK=str(index),
               OMPI_COMM_WORLD_LOCAL_RANK=str(index))
  elif kind in ('gke_tpu', 'gce_tpu'):
    # what JAX's TPU start-up finds on a Cloud TPU VM: it runs on one, and
    # it has TPU chips (without them, JAX tells itself to skip the
    # metadata server)
    from jax._src.clusters import cloud_tpu_cluster, cluster  # pylint: disable=g-import-not-at-top
    cloud_tpu_cluster.running_in_cloud_tpu_vm = True
    cluster.running_in_cloud_tpu_vm = True
    env.pop('TPU_SKIP_MDS_QUERY', None)
    attributes = {'tpu-env': "ACCELERATOR_TYPE: 'v4-16'\n"}
    if kind == 'gke_tpu':
      env.update(TPU_SKIP_MDS_QUERY='true', TPU_WORKER_ID=str(index),
                 TPU_WORKER_HOSTNAMES=','.join(['localhost'] * count))
    else:
      attributes.update({
          'agent-worker-number': str(index),
          'worker-network-endpoints': ','.join(['127.0.0.1'] * count)})
    env['GCE_METADATA_IP'] = metadata_server(attributes)
  elif kind == 'kubernetes':
    env['KUBERNETES_SERVICE_HOST'] = '10.0.0.1'
  elif kind not in ('none', 'missed_tpu'):
    raise SystemExit(f'unknown cluster kind {kind!r}')


def main():
  kind, index, count, port = sys.argv[1], *map(int, sys.argv[2:5])
  mode = sys.argv[5] if len(sys.argv) > 5 else 'auto'
  simulate(kind, index, count, port)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from qagan_jax import cluster  # pylint: disable=g-import-not-at-top
  from qagan_jax import errors  # pylint: disable=g-import-not-at-top
  if kind == 'missed_tpu':
    jax.default_backend = lambda: 'tpu'
    jax.process_count = lambda: count
  said = []
  handler = logging.Handler()
  handler.emit = lambda record: said.append(record.getMessage())
  logging.getLogger('qagan_jax').addHandler(handler)
  logging.getLogger('qagan_jax').setLevel(logging.INFO)
  found = {'started': False, 'error': None}
  try:
    found['started'] = cluster.initialize(mode, heartbeat_timeout=10)
  except errors.QaganError as error:
    found['error'] = f'{type(error).__name__}: {error}'
  if found['started']:
    gathered = multihost_utils.process_allgather(np.int32(jax.process_index()))
    found.update(index=jax.process_index(), count=jax.process_count(),
                 gathered=np.asarray(gathered).tolist())
  found['said'] = said
  print(json.dumps(found), flush=True)
  if found['started']:
    jax.distributed.shutdown()


if __name__ == '__main__':
  main()
