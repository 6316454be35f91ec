"""What a run shows: metrics.jsonl and TensorBoard events, written in the caller's thread and read back."""

import json
import struct
import threading

import numpy as np
from tensorboardX.proto import event_pb2

from qagan_jax import reporting


def read_events(folder):
  """Every Event of the TensorBoard event files in `folder`, in order (the
  TFRecord format: a little-endian uint64 length, its CRC, the bytes, their
  CRC)."""
  events = []
  for path in sorted(folder.glob('events.out.tfevents.*')):
    data, at = path.read_bytes(), 0
    while at < len(data):
      (length,) = struct.unpack('<Q', data[at:at + 8])
      events.append(event_pb2.Event.FromString(
          data[at + 12:at + 12 + length]))
      at += 12 + length + 4
  return events


def test_scalars_and_images_reach_both_logs_and_a_resume_purges_the_rest(
    tmp_path):
  threads = threading.active_count()
  writer = reporting.MetricWriter(tmp_path)
  writer.scalars(1, {'critic_loss': 0.5, 'wasserstein': np.float32(2.0)})
  writer.image(1, 'samples', np.full((4, 6, 3), 7, np.uint8))
  writer.scalars(2, {'critic_loss': 0.25})
  # no thread of its own: what fails to be written fails in the caller
  assert threading.active_count() == threads
  writer.close()
  lines = [json.loads(line) for line in
           (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['step'], r['critic_loss']) for r in lines] == [(1, 0.5), (2, 0.25)]
  events = read_events(tmp_path / 'tensorboard')
  assert events[0].file_version == 'brain.Event:2'
  values = [(e.step, v.tag, v.simple_value if v.HasField('simple_value')
             else v.image.height * 100 + v.image.width)
            for e in events[1:] for v in e.summary.value]
  assert values == [(1, 'critic_loss', 0.5), (1, 'wasserstein', 2.0),
                    (1, 'samples', 406), (2, 'critic_loss', 0.25)]
  # resumed from step 1: the lines after it go, TensorBoard hides the events
  resumed = reporting.MetricWriter(tmp_path, resume_step=1)
  resumed.close()
  assert [json.loads(line)['step'] for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()] == [1]
  assert len(list((tmp_path / 'tensorboard').iterdir())) == 2   # one each
  purge = [e for e in read_events(tmp_path / 'tensorboard')
           if e.HasField('session_log')]
  assert [(e.step, e.session_log.status) for e in purge] == [
      (2, event_pb2.SessionLog.START)]


def test_a_line_cut_mid_write_is_set_aside_and_the_run_goes_on(tmp_path,
                                                               caplog):
  writer = reporting.MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.scalars(step, {'critic_loss': float(step)})
  writer.close()
  path = tmp_path / 'metrics.jsonl'
  text = path.read_bytes()
  # a full disk or a kill during the last write: half a line, then junk
  path.write_bytes(text[:-9] + b'\n\xff\xfe{not json\n')
  with caplog.at_level('WARNING'):
    resumed = reporting.MetricWriter(tmp_path, resume_step=2)
  resumed.scalars(3, {'critic_loss': 3.0})
  resumed.close()
  assert '2 damaged line(s)' in caplog.text
  assert [r['step'] for r in reporting.read_metrics(tmp_path)] == [1, 2, 3]
  aside = (tmp_path / 'metrics.jsonl.damaged').read_text().splitlines()
  assert len(aside) == 2 and aside[0].startswith('{"step": 3')
