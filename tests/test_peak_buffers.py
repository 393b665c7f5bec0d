"""bench.peak_buffers on hand-written excerpts of XLA's dumps."""
from bench import peak_buffers

HLO = """
ENTRY %main (param.1: f32[4,8]) -> f32[4,8] {
  %param.1 = f32[4,8]{1,0:T(8,128)} parameter(0)
  %fusion.2 = bf16[16]{0} fusion(%param.1), kind=kLoop
  %copy-start.3 = (f32[2,2]{1,0}, f32[2,2]{1,0:S(3)}, u32[]) copy-start(%x)
  ROOT %add.4 = f32[4,8]{1,0} add(%param.1, %param.1)
}
"""

LIVE_A = """HloLiveRange (max 9):
  BufferLiveRange:
    param.1{}:0-9
  Live ranges at 5 (peak):
    param.1{}: 128 bytes (cumulative: 128 bytes)
    fusion.2{}: 32 bytes (cumulative: 160 bytes)
  Stack trace breakdown for peak usage: 160 bytes
"""

LIVE_B = """HloLiveRange (max 9):
  Live ranges at 6 (peak):
    param.1{}: 128 bytes (cumulative: 128 bytes)
    copy-start.3{1}: 16 bytes (cumulative: 144 bytes)
    add.4{}: 128 bytes (cumulative: 272 bytes)
  Stack trace breakdown for peak usage: 272 bytes
"""

ASSIGNMENT = """BufferAssignment:
allocation 0: size 128, parameter 0, shape |f32[4,8]| at ShapeIndex {}:
allocation 1: size 4096, preallocated-temp:
allocation 2: size 64, color 3, preallocated-temp:
allocation 3: size 2048, thread-local:
allocation 4: size 512, parameter 1, shape |f32[128]| at ShapeIndex {}:
"""


def test_peak_buffers_take_shapes_from_the_hlo():
  a = peak_buffers.peak_buffers(LIVE_A, HLO)
  b = peak_buffers.peak_buffers(LIVE_B, HLO)
  assert a == [('param.1', 'f32[4,8]', 128), ('fusion.2', 'bf16[16]', 32)]
  # A tuple's element {1} is its second array, without the memory space.
  assert b[1] == ('copy-start.3', 'f32[2,2]', 16)


def test_difference_groups_by_shape_largest_first():
  a = peak_buffers.peak_buffers(LIVE_A, HLO)
  b = peak_buffers.peak_buffers(LIVE_B, HLO)
  rows = peak_buffers.difference(a, b)
  # B adds add.4 (128 B, same shape as param.1) and copy-start.3 (16 B),
  # and drops fusion.2 (32 B); param.1 is in both.
  assert [(r[0], r[1], r[2]) for r in rows] == [
      (128, 1, 'f32[4,8]'), (-32, -1, 'bf16[16]'), (16, 1, 'f32[2,2]')]
  assert rows[0][4] == ['param.1', 'add.4']
  assert sum(r[0] for r in rows) == 272 - 160


def test_allocations_by_kind():
  assert peak_buffers.allocations(ASSIGNMENT) == {
      'parameters': 640, 'temporary heap': 4096,
      'temporary heap (memory space 3)': 64, 'thread-local': 2048}
