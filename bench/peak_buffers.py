"""What one compiled step holds at its memory peak that another does not.

    XLA_FLAGS="--xla_dump_to=DIR_A --xla_dump_hlo_as_text" JAX_PLATFORMS=cpu \\
        python -m bench.scale --worker --size=large --conditioner=none \\
        --topology=v4:4x4x8 --partitions=2 --dims=1 --remat=none
    (the same with DIR_B and another conditioner)
    python -m bench.peak_buffers DIR_A DIR_B

XLA writes, for the optimized program, the live range of every buffer and
the buffers live at the peak of their summed sizes
(`*after_optimizations-live-range.txt`), and how its buffer assignment
packs them into allocations (`*after_optimizations-buffer-assignment.txt`).
This prints, for B against A: the peak's live bytes, the buffers live at
the peak grouped by shape (with a few of their HLO names, to look up in
the dumped HLO), and the allocations by kind (parameters, the temporary
heap, ...).

The live set is what a program change controls; the heap is how XLA packs
it. On TPU the two can disagree: XLA:TPU assigns buffers again after this
dump, so `memory_analysis()`'s temporaries (the scale table) are neither the
dumped heap nor the live peak (BENCHMARKS.md, pod-slice memory).
"""
import argparse
import collections
import glob
import os
import re
from typing import Dict, List, NamedTuple

_DEFINITION = re.compile(r'\s*(?:ROOT )?%?([\w.\-]+) = (\([^=]*?\)|\S+) ')
_LIVE = re.compile(r'\s+([\w.\-]+)\{([\d,]*)\}: (\d+) bytes')
_ALLOCATION = re.compile(r'allocation \d+: size (\d+),(.*)')
_LAYOUT = re.compile(r'\{[^}]*\}')
_ARRAY = re.compile(r'[a-z]+\d*\[[\d,]*\]')


class Buffer(NamedTuple):
  name: str  # The HLO instruction that defines it.
  shape: str  # Without layout, e.g. 'f32[24,1,8,512,16]'.
  size: int  # Bytes, as the live-range report counts them.


def shapes(hlo_text: str) -> Dict[str, str]:
  """HLO instruction name -> its result shape, layouts dropped."""
  out = {}
  for line in hlo_text.splitlines():
    m = _DEFINITION.match(line)
    if m:
      out[m.group(1)] = _LAYOUT.sub('', m.group(2))
  return out


def peak_buffers(live_range_text: str, hlo_text: str) -> List[Buffer]:
  """The buffers the live-range report lists as live at the peak."""
  start = live_range_text.index('(peak):')
  end = live_range_text.find('Stack trace', start)
  section = live_range_text[start:end if end >= 0 else None]
  by_name = shapes(hlo_text)
  buffers = []
  for m in _LIVE.finditer(section):
    name, index, size = m.group(1), m.group(2), int(m.group(3))
    shape = by_name.get(name, '?')
    if index and shape.startswith('('):  # One element of a tuple.
      elements = _ARRAY.findall(shape)
      position = int(index.split(',')[0])
      if position < len(elements):
        shape = elements[position]
    buffers.append(Buffer(name, shape, size))
  return buffers


def allocation_kind(description: str) -> str:
  if 'parameter' in description:
    return 'parameters'
  if 'preallocated-temp' in description:
    color = re.search(r'color (\d+)', description)
    return 'temporary heap' + (f' (memory space {color.group(1)})'
                               if color else '')
  if 'thread-local' in description:
    return 'thread-local'
  if 'constant' in description:
    return 'constants'
  return 'other'


def allocations(buffer_assignment_text: str) -> Dict[str, int]:
  """Bytes of the buffer assignment's allocations, by kind."""
  out = collections.Counter()
  for line in buffer_assignment_text.splitlines():
    m = _ALLOCATION.match(line)
    if m:
      out[allocation_kind(m.group(2))] += int(m.group(1))
  return dict(out)


def difference(a: List[Buffer], b: List[Buffer]):
  """[(bytes, count, shape, size, names)]: buffers live at B's peak minus
  those at A's, grouped by (shape, size), largest change first."""
  count = lambda bufs: collections.Counter((x.shape, x.size) for x in bufs)
  ca, cb = count(a), count(b)
  rows = []
  for key in set(ca) | set(cb):
    n = cb[key] - ca[key]
    if n:
      names = [x.name for x in (b if n > 0 else a)
               if (x.shape, x.size) == key][:3]
      rows.append((n * key[1], n, key[0], key[1], names))
  return sorted(rows, key=lambda r: (-abs(r[0]), r[2]))


def _read(directory: str, suffix: str) -> str:
  paths = sorted(glob.glob(os.path.join(directory, f'*{suffix}')))
  if not paths:
    raise SystemExit(f'No *{suffix} in {directory}: dump with XLA_FLAGS='
                     '"--xla_dump_to=DIR --xla_dump_hlo_as_text".')
  # The step is the largest module XLA dumped.
  with open(max(paths, key=os.path.getsize)) as f:
    return f.read()


def load(directory: str):
  hlo = _read(directory, 'after_optimizations.txt')
  return (peak_buffers(_read(directory, 'after_optimizations-live-range.txt'),
                       hlo),
          allocations(_read(directory,
                            'after_optimizations-buffer-assignment.txt')))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('a', help='XLA dump directory of the reference step')
  parser.add_argument('b', help='XLA dump directory of the compared step')
  parser.add_argument('--rows', type=int, default=20)
  args = parser.parse_args(argv)
  (peak_a, alloc_a), (peak_b, alloc_b) = load(args.a), load(args.b)
  mib = lambda n: f'{n / 2**20:+,.2f} MiB'
  total = lambda bufs: sum(x.size for x in bufs)
  print(f'live at the peak: {total(peak_a):,} -> {total(peak_b):,} bytes '
        f'({mib(total(peak_b) - total(peak_a))})')
  for size, n, shape, each, names in difference(peak_a,
                                                peak_b)[:args.rows]:
    print(f'  {mib(size):>14}  {n:+d} x {shape} ({each:,} B)  '
          f'{", ".join(names)}')
  print('allocations:')
  for kind in sorted(set(alloc_a) | set(alloc_b)):
    a, b = alloc_a.get(kind, 0), alloc_b.get(kind, 0)
    print(f'  {kind:32s} {a:>15,} -> {b:>15,} ({mib(b - a)})')


if __name__ == '__main__':
  main()
