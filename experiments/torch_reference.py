"""A plain PyTorch eager WGAN-GP step with the same ResNets, for speed comparisons.

    python experiments/torch_reference.py [--iters 2] [--width 128] [--batch 64]

The generator and critic of `qagan_jax.models` (32x32: 1,204,483 and
1,053,825 parameters at width 128) written the obvious way in PyTorch, and one
training iteration as qagan_jax's step: n_critic = 5 critic updates, each on
a real batch and fresh fakes, with the two-sided gradient penalty through
`torch.autograd.grad(create_graph=True)`, then one generator update on a
batch twice as large; Adam(2e-4, betas (0, 0.9)). Prints one JSON line with
sec_per_iter (median over --iters after one warm-up iteration).

Only for timing: it needs torch (`pip install ".[convert]"`, or the CPU
build `pip install torch==2.13.0` where a local wheel exists) and is not part
of the package. `experiments/benchmark_train.py --torch` runs it in the same
process as the JAX step, so that both meet the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def build(width: int = 128, latent_dim: int = 128):
  """(generator, critic) torch modules for 32x32 images, NCHW."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  def conv(cin, cout, k):
    layer = nn.Conv2d(cin, cout, k, padding=k // 2)
    nn.init.zeros_(layer.bias)
    return layer

  class UpBlock(nn.Module):

    def __init__(self, c):
      super().__init__()
      self.norm1, self.norm2 = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
      self.conv1, self.conv2 = conv(c, c, 3), conv(c, c, 3)
      self.shortcut = conv(c, c, 1)

    def forward(self, x):
      up = lambda t: F.interpolate(t, scale_factor=2, mode='nearest')
      h = self.conv1(up(F.relu(self.norm1(x))))
      h = self.conv2(F.relu(self.norm2(h)))
      return self.shortcut(up(x)) + h

  class Generator(nn.Module):

    def __init__(self):
      super().__init__()
      self.input = nn.Linear(latent_dim, 4 * 4 * width)
      self.blocks = nn.Sequential(*[UpBlock(width) for _ in range(3)])
      self.norm = nn.BatchNorm2d(width)
      self.output = conv(width, 3, 3)

    def forward(self, z):
      x = self.input(z).view(-1, width, 4, 4)
      return torch.tanh(self.output(F.relu(self.norm(self.blocks(x)))))

  class CriticBlock(nn.Module):

    def __init__(self, cin, cout, down, first=False):
      super().__init__()
      self.down, self.first = down, first
      self.conv1, self.conv2 = conv(cin, cout, 3), conv(cout, cout, 3)
      self.shortcut = conv(cin, cout, 1) if (down or cin != cout) else None

    def forward(self, x):
      pool = lambda t: F.avg_pool2d(t, 2)
      if self.first:
        h = self.conv2(F.relu(self.conv1(x)))
        return self.shortcut(pool(x)) + pool(h)
      h = self.conv2(F.relu(self.conv1(F.relu(x))))
      if self.down:
        return pool(self.shortcut(x)) + pool(h)
      return x + h

  class Critic(nn.Module):

    def __init__(self):
      super().__init__()
      self.blocks = nn.Sequential(
          CriticBlock(3, width, True, first=True),
          CriticBlock(width, width, True),
          CriticBlock(width, width, False), CriticBlock(width, width, False))
      self.output = nn.Linear(width, 1)

    def forward(self, x):
      return self.output(F.relu(self.blocks(x)).mean(dim=(2, 3)))[:, 0]

  return Generator(), Critic()


def make_step(generator, critic, *, batch: int, n_critic: int = 5,
              latent_dim: int = 128, gp_weight: float = 1.0,
              device: str = 'cpu'):
  """`step(real)`: one iteration on `real` [n_critic, B, 3, 32, 32], with
  the modules and `real` on `device` ('cpu', 'cuda')."""
  import torch  # pylint: disable=g-import-not-at-top
  g_opt = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.0, 0.9))
  d_opt = torch.optim.Adam(critic.parameters(), 2e-4, betas=(0.0, 0.9))

  def step(real_batches):
    for real in real_batches:
      with torch.no_grad():
        fake = generator(torch.randn(batch, latent_dim, device=device))
      eps = torch.rand(batch, 1, 1, 1, device=device)
      mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
      (grads,) = torch.autograd.grad(critic(mixed).sum(), mixed,
                                     create_graph=True)
      penalty = ((grads.flatten(1).norm(dim=1) - 1)**2).mean()
      real_scores = critic(real)
      loss = (critic(fake).mean() - real_scores.mean() + gp_weight * penalty
              + 1e-5 * (real_scores**2).mean())
      d_opt.zero_grad(set_to_none=True)
      loss.backward()
      d_opt.step()
    for p in critic.parameters():
      p.requires_grad_(False)
    g_loss = -critic(generator(torch.randn(2 * batch, latent_dim,
                                           device=device))).mean()
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    for p in critic.parameters():
      p.requires_grad_(True)

  return step


def time_steps(iters: int, width: int = 128, batch: int = 64, n_critic: int = 5,
               seed: int = 0, device: str = 'cpu'):
  """Per-iteration seconds of `iters` timed iterations after one warm-up,
  on `device` ('cpu', or 'cuda': each iteration waits for the GPU)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  generator, critic = (m.to(device) for m in build(width))
  step = make_step(generator, critic, batch=batch, n_critic=n_critic,
                   device=device)
  real = torch.rand(n_critic, batch, 3, 32, 32, device=device) * 2 - 1
  wait = torch.cuda.synchronize if device.startswith('cuda') else (
      lambda: None)
  step(real)
  wait()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    step(real)
    wait()
    times.append(time.perf_counter() - start)
  params = lambda m: sum(p.numel() for p in m.parameters())
  return times, params(generator), params(critic)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--iters', type=int, default=2)
  parser.add_argument('--width', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  times, params_g, params_d = time_steps(args.iters, args.width, args.batch)
  print(json.dumps({
      'variant': 'torch_wgangp', 'sec_per_iter': statistics.median(times),
      'params_G': params_g, 'params_D': params_d, 'batch': args.batch,
      'width': args.width, 'torch': torch.__version__,
      'threads': torch.get_num_threads()}))


if __name__ == '__main__':
  main()
