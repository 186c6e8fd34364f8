"""Throughput of the Criteo data generator (efl/example/criteo/generate_data.py).

Synthesizes rows in the Kaggle train.txt format in a temporary directory, runs the generator on them as a
user would (a fresh process, all cores) and prints input rows per second of its wall time:

  python benchmarks/criteo_gen.py [--rows 200000] [--workers N]

Output line: `BENCH criteo_gen_rows_per_s <value>`.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from efl.example.criteo import synthetic  # pylint: disable=wrong-import-position

GENERATOR = os.path.join(ROOT, 'efl', 'example', 'criteo', 'generate_data.py')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', type=int, default=200000, help='synthetic input rows')
  parser.add_argument('--workers', type=int, default=None, help='generator processes (default: every core)')
  parser.add_argument('--rows_per_file', type=int, default=20000)
  parser.add_argument('--chunk_mb', type=float, default=8.0)
  args = parser.parse_args()
  work = tempfile.mkdtemp(prefix='criteo_gen_bench_')
  try:
    source = os.path.join(work, 'train.txt')
    synthetic.write_synthetic_criteo(source, args.rows, seed=0)
    megabytes = os.path.getsize(source) / float(1 << 20)
    cmd = [
      sys.executable,
      GENERATOR,
      '--input',
      source,
      '--output_dir',
      os.path.join(work, 'out'),
      '--rows_per_file',
      str(args.rows_per_file),
      '--chunk_mb',
      str(args.chunk_mb),
      '--quiet',
    ]
    if args.workers:
      cmd += ['--workers', str(args.workers)]
    start = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
    elapsed = time.time() - start
    if proc.returncode != 0:
      sys.stderr.write(proc.stderr.decode('utf-8', 'replace'))
      return proc.returncode
    print(proc.stdout.decode('utf-8', 'replace').strip())
    print(
      'input: %d rows, %.1f MiB; wall time %.2f s (%.1f MiB/s)' % (args.rows, megabytes, elapsed, megabytes / elapsed)
    )
    print('BENCH criteo_gen_rows_per_s %.0f' % (args.rows / elapsed))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
