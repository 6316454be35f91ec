"""What a run shows: metrics.jsonl and TensorBoard events, written in the caller's thread and read back."""

import io
import json
import re
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


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_off_a_terminal_is_a_line_every_interval():
  """A log file, a pipe or a notebook cell gets a plain line every
  `every_seconds`: the step, the last interval's rate, the ETA from the
  rate since the start (evaluations included), the latest losses and the
  time spent in evaluations."""
  out, clock = io.StringIO(), Clock()
  progress = reporting.Progress(100, 20, every_seconds=30, images_per_step=448,
                                stream=out, clock=clock)
  for _ in range(5):                 # 5 steps in 20 s: no line yet
    clock.now += 4
    progress.update()
  assert out.getvalue() == ''
  progress.show({'critic_loss': -1.5234, 'generator_loss': 0.61,
                 'wasserstein': 1.7, 'quality_penalty': 0.02134,
                 'gradient_penalty': 0.3})
  progress.add_evaluation(41.0)
  clock.now += 12                    # the sixth step ends 32 s after the start
  progress.update()
  (line,) = out.getvalue().splitlines()
  assert re.fullmatch(r'\d\d:\d\d:\d\d .*', line), line
  # 6 steps in 32 s: 0.1875 it/s, 84 images/s; 74 steps left at 32/6 s each
  assert line[9:] == ('step 26/100 (26.0%): 0.188 it/s, 84 images/s, ETA '
                      '6 min 35 s; critic -1.52, generator 0.61, '
                      'wasserstein 1.7, quality 0.0213; evaluation 41 s so '
                      'far'), line
  clock.now += 10                    # the interval starts again at the line
  progress.update()
  assert len(out.getvalue().splitlines()) == 1
  clock.now += 20
  progress.update(2)
  second = out.getvalue().splitlines()[1]
  assert 'step 29/100 (29.0%): 0.1 it/s' in second, second   # 3 in 30 s
  progress.write('SIGINT: stopped at step 29')
  assert re.fullmatch(r'\d\d:\d\d:\d\d SIGINT: stopped at step 29',
                      out.getvalue().splitlines()[2])
  progress.close()


def test_progress_on_a_terminal_is_a_bar_and_no_lines():
  out, clock = Terminal(), Clock()
  progress = reporting.Progress(10, 0, every_seconds=1, stream=out,
                                clock=clock)
  for _ in range(3):
    clock.now += 5
    progress.update()
  progress.close()
  # tqdm's bar ('3/10 [...]'), and none of the plain lines
  assert '3/10' in out.getvalue() and 'step ' not in out.getvalue()


def test_progress_lines_can_be_turned_off():
  out, clock = io.StringIO(), Clock()
  progress = reporting.Progress(10, 0, bar=False, every_seconds=0,
                                stream=out, clock=clock)
  clock.now += 1000
  progress.update()
  assert out.getvalue() == ''
  # and a terminal without the bar gets the lines
  out = Terminal()
  progress = reporting.Progress(10, 0, bar=False, every_seconds=1,
                                stream=out, clock=clock)
  clock.now += 2
  progress.update()
  assert 'step 1/10 (10.0%): 0.5 it/s, ETA' in out.getvalue()


def test_duration():
  assert [reporting.duration(s) for s in (0, 42.4, 187, 7500, 90061)] == [
      '0 s', '42 s', '3 min 07 s', '2 h 05 min', '25 h 01 min']


def test_loss_curves_leave_the_callers_matplotlib_alone(tmp_path):
  """In a notebook the run's plot must not switch the inline backend to
  Agg (the notebook's own figures would stop showing) or leave figures
  open."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  before = matplotlib.get_backend()
  matplotlib.use('svg')          # a backend of the caller's
  try:
    (tmp_path / 'metrics.jsonl').write_text(''.join(
        json.dumps({'step': step, 'critic_loss': -step / 10,
                    'generator_loss': step / 5, 'eval/swd/mean': 3.0 - step})
        + '\n' for step in (10, 20, 30)))
    path = reporting.plot_loss_curves(tmp_path)
    assert matplotlib.get_backend() == 'svg'
    assert plt.get_fignums() == []
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  finally:
    matplotlib.use(before)
