"""What a run shows: metrics (JSON lines and TensorBoard), progress, image grids, loss curves.

TensorBoard event files are written with tensorboardX's event writer,
which needs no TensorFlow, in the caller's thread. All files go under the
run's workdir (a local path or a URL of qagan_jax.storage):

  metrics.jsonl          one JSON object per logged step
  tensorboard/           scalars and sample grids
  samples/step_*.png     grids of samples from fixed latents
  loss_curves.png        losses and penalties over the run
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import sys
import time
import uuid

import numpy as np
from etils import epath
from PIL import Image

from qagan_jax import input_pipeline
from qagan_jax import storage

log = logging.getLogger(__name__)


def image_grid(images: np.ndarray, padding: int = 1) -> np.ndarray:
  """`[N, H, W, C]` images in [-1, 1] -> one uint8 `[H', W', C]` square grid."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  side = math.ceil(math.sqrt(n))
  grid = np.full((side * (h + padding) + padding,
                  side * (w + padding) + padding, c), 255, np.uint8)
  pixels = input_pipeline.to_uint8(images)
  for i in range(n):
    row, col = divmod(i, side)
    top, left = padding + row * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = pixels[i]
  return grid


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
  """Saves a uint8 `[H, W, C]` image as PNG at any path of storage."""
  buffer = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(
      buffer, format='png')
  storage.write_bytes(epath.Path(path), buffer.getvalue())


class EventFile:
  """A TensorBoard event file, written in the caller's thread.

  tensorboardX's SummaryWriter writes from a thread of its own: a write that
  fails there (a full disk) prints that thread's traceback, the error never
  reaches the run, and once the thread is gone further events fill its
  queue and block. Here every write happens in the call, so that its errors
  are the caller's, as for metrics.jsonl. `purge_step`: TensorBoard hides
  the events of that step and after, written before an interruption.
  """

  def __init__(self, logdir: epath.Path, purge_step: int | None = None):
    # pylint: disable=g-import-not-at-top
    from tensorboardX import event_file_writer
    from tensorboardX import summary
    from tensorboardX.proto import event_pb2
    # pylint: enable=g-import-not-at-top
    self._summary, self._event = summary, event_pb2
    logdir = epath.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    # named by the second it is opened in, and a suffix of its own: a
    # writer opened in the same second must not overwrite the file
    self._writer = event_file_writer.EventsWriter(
        os.fspath(logdir / 'events'),
        filename_suffix=f'.{uuid.uuid4().hex[:8]}')
    if purge_step is not None:
      self._write(self._event.Event(step=purge_step, session_log=(
          self._event.SessionLog(status=self._event.SessionLog.START))))

  def _write(self, event) -> None:
    event.wall_time = time.time()
    self._writer.write_event(event)

  def scalar(self, name: str, value: float, step: int) -> None:
    self._write(self._event.Event(
        step=int(step), summary=self._summary.scalar(name, float(value))))

  def image(self, name: str, image: np.ndarray, step: int) -> None:
    """`image`: uint8 `[H, W, C]`."""
    self._write(self._event.Event(step=int(step), summary=self._summary.image(
        name, image, dataformats='HWC')))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MetricWriter:
  """Writes scalars to metrics.jsonl and TensorBoard, images to TensorBoard.

  On resume from step s, lines and events of steps after s (written before an
  interruption, and about to be written again) are dropped. A local
  metrics.jsonl is appended to line by line; on an object store (no append)
  the file is rewritten whole, at most every `upload_every` seconds and at
  every `flush()` (the loop flushes before each checkpoint, so that the
  lines of the steps a checkpoint holds are never lost).
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: int = 0,
               enabled: bool = True, upload_every: float = 30.0):
    self.enabled = enabled
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self._tensorboard = None
    self._append = not storage.is_url(self.path)
    self._upload_every = upload_every
    self._lines, self._dirty, self._uploaded = [], False, time.monotonic()
    if not enabled:
      return
    if self.path.exists():
      records, damaged = parse_metrics(self.path.read_bytes())
      if damaged:
        # a line cut by a full disk or a kill mid-write: kept aside, not lost
        aside = self.path.parent / (self.path.name + '.damaged')
        previous = aside.read_text() if aside.exists() else ''
        storage.write_text(aside, previous + ''.join(
            line + '\n' for line in damaged))
        log.warning('%d damaged line(s) of %s (cut while being written) were '
                    'moved to %s; the run goes on from its checkpoint.',
                    len(damaged), self.path, aside)
      self._lines = [json.dumps(r) for r in records if r['step'] <= resume_step]
      storage.write_text(self.path, self._contents())
    else:
      self.path.parent.mkdir(parents=True, exist_ok=True)
    self._tensorboard = EventFile(epath.Path(workdir) / 'tensorboard',
                                  purge_step=resume_step + 1 if resume_step
                                  else None)

  def scalars(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'time': time.time()}
    record.update({k: float(v) for k, v in values.items()})
    line = json.dumps(record)
    if self._append:
      with self.path.open('a') as f:
        f.write(line + '\n')
    else:
      self._lines.append(line)
      self._dirty = True
      if time.monotonic() - self._uploaded > self._upload_every:
        self.flush()
    for name, value in values.items():
      self._tensorboard.scalar(name, value, step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._tensorboard.image(name, image, step)

  def _contents(self) -> str:
    return ''.join(line + '\n' for line in self._lines)

  def flush(self) -> None:
    """Puts every line and event written so far in the workdir."""
    if self._dirty:
      storage.write_text(self.path, self._contents())
      self._dirty, self._uploaded = False, time.monotonic()
    if self._tensorboard is not None:
      self._tensorboard.flush()

  def close(self) -> None:
    self.flush()
    if self._tensorboard is not None:
      self._tensorboard.close()


def parse_metrics(data: bytes) -> tuple[list[dict], list[str]]:
  """(the records of a metrics.jsonl's content, its lines that are not one:
  cut while being written, or not text at all)."""
  records, damaged = [], []
  for line in data.decode('utf-8', errors='replace').splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict) and isinstance(record.get('step'), int):
      records.append(record)
    else:
      damaged.append(line)
  return records, damaged


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """The records of a workdir's metrics.jsonl (damaged lines skipped)."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return parse_metrics(path.read_bytes())[0]


def plot_loss_curves(workdir: str | os.PathLike,
                     out: str | os.PathLike | None = None) -> epath.Path | None:
  """Plots the run's losses and penalties to loss_curves.png (matplotlib)."""
  records = read_metrics(workdir)
  if not records:
    return None
  # a Figure of its own, without pyplot: the caller's backend (a notebook's
  # inline plots) and figures are left alone
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  panels = [
      ('losses', ('critic_loss', 'generator_loss')),
      ('Wasserstein estimate', ('wasserstein',)),
      ('penalties', ('gradient_penalty', 'quality_penalty')),
  ]
  # one panel per evaluation metric (their scales differ), main values only
  logged = {k for r in records for k in r if k.startswith('eval/')}
  for key in sorted(logged):
    name = key.removeprefix('eval/')
    if name.endswith(('_std', '_stderr', '_real')) or (
        name.startswith('swd/') and name != 'swd/mean'):
      continue
    companions = tuple(k for k in (key, key + '_real') if k in logged)
    panels.append((name, companions))
  panels = [(title, keys) for title, keys in panels
            if any(k in r for r in records for k in keys)]
  cols = min(len(panels), 3)
  rows = math.ceil(len(panels) / cols)
  fig = figure.Figure(figsize=(4.5 * cols, 3.2 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for ax, (title, keys) in zip(axes.flat, panels):
    for key in keys:
      points = [(r['step'], r[key]) for r in records if key in r]
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=key.removeprefix('eval/'),
                marker='o' if len(points) < 20 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel('iteration')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  out = epath.Path(out or epath.Path(workdir) / 'loss_curves.png')
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=90, format='png')
  storage.write_bytes(out, buffer.getvalue())
  return out


def duration(seconds: float) -> str:
  """'2 h 05 min', '3 min 07 s' or '42 s'."""
  hours, rest = divmod(int(round(seconds)), 3600)
  minutes, seconds = divmod(rest, 60)
  return (f'{hours} h {minutes:02d} min' if hours else
          f'{minutes} min {seconds:02d} s' if minutes else f'{seconds} s')


class Progress:
  """Training progress where the output goes.

  On a terminal (and `bar`): a tqdm bar with the step, it/s, the ETA and
  the latest losses. Elsewhere (a log file, a pipe, a Slurm job, a notebook
  cell), or without the bar: one line to `stream` every `every_seconds`
  (0: none), with its time as the run's log has it:

      12:04:31 step 1200/100000 (1.2%): 3.41 it/s, 2183 images/s, ETA 8 h
      03 min; critic -1.52, generator 0.61, wasserstein 1.7, quality 0.0213;
      evaluation 41 s so far

  The rate is the last interval's; the ETA divides the steps left by the
  rate since this process began training, evaluations and grids included.
  """

  LOSSES = ('critic_loss', 'generator_loss', 'wasserstein', 'quality_penalty')

  def __init__(self, total: int, initial: int, bar: bool = True,
               every_seconds: float = 60.0, images_per_step: int = 0,
               stream=None, clock=time.monotonic):
    self.total, self.step = total, initial
    self.stream = sys.stderr if stream is None else stream
    self.every_seconds = every_seconds
    self.images_per_step = images_per_step
    self.clock = clock
    self.evaluation_seconds = 0.0
    self.losses = {}
    self._began = self._last = clock()
    self._first = self._last_step = initial
    self.bar = None
    if bar and _is_terminal(self.stream):
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, initial=initial, unit='it',
                      dynamic_ncols=True, smoothing=0.1, file=self.stream)

  def update(self, n: int = 1) -> None:
    self.step += n
    if self.bar is not None:
      self.bar.update(n)
    elif self.every_seconds and (
        self.clock() - self._last >= self.every_seconds):
      self._line()

  def show(self, metrics: dict) -> None:
    """The latest losses (of a logged step), for the bar or the next line."""
    self.losses = {k.replace('_loss', '').replace('_penalty', ''):
                   float(metrics[k]) for k in self.LOSSES if k in metrics}
    if self.bar is not None:
      self.bar.set_postfix({k: f'{v:.3g}' for k, v in self.losses.items()},
                           refresh=False)

  def add_evaluation(self, seconds: float) -> None:
    """Time the loop spent in evaluations and sample grids."""
    self.evaluation_seconds += seconds

  def line(self) -> str:
    """The progress line of now (without its time)."""
    now = self.clock()
    rate = (self.step - self._last_step) / max(now - self._last, 1e-9)
    done_here = self.step - self._first
    text = (f'step {self.step}/{self.total} '
            f'({100 * self.step / self.total:.1f}%): {rate:.3g} it/s')
    if self.images_per_step:
      text += f', {rate * self.images_per_step:.0f} images/s'
    if done_here and self.step < self.total:
      left = (self.total - self.step) * (now - self._began) / done_here
      text += f', ETA {duration(left)}'
    if self.losses:
      text += '; ' + ', '.join(f'{k} {v:.3g}' for k, v in self.losses.items())
    if self.evaluation_seconds >= 0.5:
      text += f'; evaluation {duration(self.evaluation_seconds)} so far'
    return text

  def _line(self) -> None:
    self.write(self.line())
    self._last, self._last_step = self.clock(), self.step

  def write(self, message: str) -> None:
    """A message with its time, above the bar if there is one."""
    message = f'{time.strftime("%H:%M:%S")} {message}'
    if self.bar is not None:
      self.bar.write(message, file=self.stream)
    else:
      print(message, file=self.stream, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):     # no isatty, or closed
    return False
