"""Sharding over a device mesh: one code path from one CPU to a TPU pod slice.

The mesh has two axes, 'data' (batch parallelism) and 'model' (tensor
parallelism over heads, MLP and vocabulary). Parameters and activations carry
logical axis names (`param_with_axes`, `with_sharding_constraint`); the table
`LOGICAL_AXIS_RULES` maps them onto mesh axes. A logical name the table does
not know is replicated, so a new conditioner's parameters work before anyone
writes rules for them. The rules are t5x's standard 1-D parameter partitioning,
so the same names work under t5x's partitioner.

2-D parameter partitioning (t5x's `parameter_partitioning_dims=2`, i.e.
FSDP/ZeRO-3 over 'data'): parameters, and so the optimizer state, also split
their 'embed' dim over 'data'. Activations keep the 1-D rules (their 'batch'
already uses 'data'), so XLA all-gathers each weight where it is used and
reduce-scatters its gradient: per-chip parameter and optimizer memory shrink
by the 'data' size at the price of those collectives.

Multi-host: every process builds the same mesh from `jax.devices()` (ordered
by process), reads its own shard of the data (`shard_info`) and contributes
its rows to one global batch (`global_batch`). Parameters and optimizer state
are created and updated inside jit with explicit shardings, so they are never
gathered onto one host.
"""
import contextlib
import functools
import logging
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from flax.linen import partitioning as nn_partitioning
from flax import traverse_util
import gin
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import seqio

from hyperprompt.conditioning import axes as conditioner_axes

DATA, MODEL = 'data', 'model'

# (logical axis name, mesh axis or None), in priority order.
LOGICAL_AXIS_RULES: Tuple[Tuple[str, Optional[str]], ...] = (
    ('batch', DATA),
    ('vocab', MODEL),
    ('mlp', MODEL),
    ('heads', MODEL),
    ('joined_kv', MODEL),
    ('kv', None),
    ('embed', None),
    ('length', None),
    ('relpos_buckets', None),
    # The scanned layer stack (T5Config.scan_layers).
    ('layers', None),
    # Conditioners: small, replicated but for the adapters' width, over
    # 'data' (conditioning/axes.py); their 'embed'/'joined_kv' dims follow
    # the rules above.
) + conditioner_axes.mesh_rules(DATA)


@gin.configurable(module='hyperprompt.partitioning')
def initialize_distributed(enabled: bool = False,
                           coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           cpu_collectives: Optional[str] = None) -> None:
  """Joins a multi-host job (`jax.distributed.initialize`) when `enabled`.

  On Cloud TPU pod slices every argument can stay None: JAX discovers the
  coordinator and the process ids from the TPU metadata. Elsewhere (e.g. two
  CPU processes in a test) give all three. `cpu_collectives` ('gloo') enables
  cross-process collectives on CPU.
  """
  if not enabled:
    return
  if cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  logging.info('Process %d of %d; %d global devices, %d local.',
               jax.process_index(), jax.process_count(), jax.device_count(),
               jax.local_device_count())


def _is_spec(x) -> bool:
  return x is None or isinstance(x, P)


@gin.configurable(module='hyperprompt.partitioning')
class Partitioner:
  """A 'data' x 'model' mesh and the logical-to-mesh sharding rules.

  Attributes:
    num_partitions: devices per model replica (size of the 'model' axis);
      must divide the device count. 1 is pure data parallelism.
    logical_axis_rules: (logical name, mesh axis) pairs; unknown names are
      replicated.
    parameter_partitioning_dims: 1 (parameters split over 'model' only) or
      2 (also their 'embed' dim over 'data'; module docstring).
  """

  def __init__(self, num_partitions: int = 1,
               logical_axis_rules: Sequence[Tuple[str, Optional[str]]] = (
                   LOGICAL_AXIS_RULES),
               devices: Optional[Sequence[jax.Device]] = None,
               parameter_partitioning_dims: int = 1):
    devices = list(jax.devices() if devices is None else devices)
    if num_partitions < 1 or len(devices) % num_partitions:
      raise ValueError(
          f'num_partitions={num_partitions} must divide the {len(devices)} '
          'devices present. Set hyperprompt.partitioning.Partitioner.'
          'num_partitions in gin.')
    # jax.devices() is ordered by process, so 'data' rows of one process are
    # contiguous and each process feeds a contiguous slice of the batch.
    grid = np.array(devices, dtype=object).reshape(
        len(devices) // num_partitions, num_partitions)
    self.mesh = Mesh(grid, (DATA, MODEL))
    # The processes this mesh spans, in order (all of them, normally).
    self.processes = sorted({d.process_index for d in devices})
    self.rules = tuple((k, v) for k, v in logical_axis_rules)
    if parameter_partitioning_dims not in (1, 2):
      raise ValueError(
          'parameter_partitioning_dims must be 1 or 2, got '
          f'{parameter_partitioning_dims}.')
    self.parameter_partitioning_dims = parameter_partitioning_dims
    # Rules for parameters and optimizer state; activations use self.rules.
    self.param_rules = self.rules if parameter_partitioning_dims == 1 else (
        (('embed', DATA),) + tuple(r for r in self.rules if r[0] != 'embed'))

  @property
  def data_parallelism(self) -> int:
    return self.mesh.shape[DATA]

  @property
  def data_sharding(self) -> NamedSharding:
    """Batch rows over 'data', everything else replicated."""
    return NamedSharding(self.mesh, P(DATA))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @contextlib.contextmanager
  def context(self):
    """Mesh and rules in scope, so the network's activation constraints apply.

    Trace and run jitted steps inside it.
    """
    with jax.set_mesh(self.mesh), nn_partitioning.axis_rules(self.rules):
      yield

  def logical_specs(self, params_axes: Mapping[str, Any]) -> Any:
    """The `params_axes` collection -> tree of logical PartitionSpecs."""
    return nn_partitioning.get_axis_names(params_axes)

  def param_shardings(self, params_axes: Mapping[str, Any],
                      params_shapes: Any) -> Any:
    """NamedShardings for the params tree, checked against its shapes.

    Args:
      params_axes: the `params_axes` collection from model initialisation.
      params_shapes: the params tree (arrays or ShapeDtypeStructs).
    """
    specs = traverse_util.flatten_dict(
        dict(self.logical_specs(params_axes)), sep='/')
    shapes = traverse_util.flatten_dict(dict(params_shapes), sep='/')
    missing = sorted(set(shapes) - set(specs))
    if missing:
      raise ValueError(
          'Parameters without logical axes (create them with '
          f'flax.linen.partitioning.param_with_axes): {missing}.')
    out = {}
    for path, shape in shapes.items():
      mesh_spec = nn_partitioning.logical_to_mesh_axes(
          _first_occurrences(specs[path]), self.param_rules)
      self._check_divisible(path, shape.shape, specs[path], mesh_spec)
      out[path] = NamedSharding(self.mesh, mesh_spec)
    return traverse_util.unflatten_dict(out, sep='/')

  def _check_divisible(self, name, shape, logical, mesh_spec):
    for dim, axis in zip(shape, mesh_spec):
      if axis is None:
        continue
      size = int(np.prod([self.mesh.shape[a] for a in
                          (axis if isinstance(axis, tuple) else (axis,))]))
      if dim % size:
        # num_partitions sets the 'model' axis; the 'data' axis is what is
        # left of the devices, so it changes with the device count too.
        remedy = ('num_partitions dividing that dimension' if axis == MODEL
                  else 'a device count and num_partitions whose quotient '
                  f'(the {DATA!r} axis) divides that dimension')
        raise ValueError(
            f'Parameter {name} {tuple(shape)} with logical axes {logical} '
            f'cannot be split {size} ways over mesh axis {axis!r}. Choose '
            f'{remedy}, or map its logical axis to None in '
            "Partitioner.logical_axis_rules ('embed' goes over 'data' with "
            "parameter_partitioning_dims=2, the adapters' 'adapter_embed' "
            'always).')

  def state_shardings(self, state_shapes: Any, params_axes: Mapping[str, Any],
                      params_shapes: Any) -> Any:
    """Shardings for any tree holding params-shaped leaves (optimizer state).

    A leaf is matched to the parameter whose path ends its dict-key path
    (optax states nest the params tree in tuples and label dicts). Same shape:
    the parameter's sharding. Factored second moments (Adafactor's v_row
    drops the last dim, v_col the second to last): the parameter's sharding
    without that dim. Anything else (counts, placeholders) is replicated.
    """
    param_shardings = traverse_util.flatten_dict(
        dict(self.param_shardings(params_axes, params_shapes)), sep='/')
    param_shape = {k: v.shape for k, v in traverse_util.flatten_dict(
        dict(params_shapes), sep='/').items()}

    def sharding_of(path, leaf):
      keys = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
      for start in range(len(keys)):
        name = '/'.join(keys[start:])
        if name in param_shardings:
          return _moment_sharding(param_shardings[name], param_shape[name],
                                  tuple(leaf.shape), self.mesh)
      return self.replicated

    return jax.tree_util.tree_map_with_path(sharding_of, state_shapes)

  def shard_info(self) -> seqio.ShardInfo:
    """This process's shard of the input data."""
    return seqio.ShardInfo(index=jax.process_index(),
                           num_shards=jax.process_count())

  def host_rows(self, global_batch_size: int) -> slice:
    """The rows of a global batch that this process feeds."""
    num = len(self.processes)
    if global_batch_size % num:
      raise ValueError(f'Batch size {global_batch_size} must be divisible by '
                       f'the {num} processes.')
    if global_batch_size % self.data_parallelism:
      raise ValueError(
          f'Batch size {global_batch_size} must be divisible by the '
          f"{self.data_parallelism} devices of the mesh's 'data' axis.")
    n = global_batch_size // num
    i = self.processes.index(jax.process_index())
    return slice(i * n, (i + 1) * n)

  def global_batch(self, host_batch: Mapping[str, np.ndarray]
                   ) -> Mapping[str, jax.Array]:
    """This process's rows -> one global batch sharded over 'data'."""
    out = {}
    for k, v in host_batch.items():
      v = np.asarray(v)
      global_shape = (v.shape[0] * len(self.processes),) + v.shape[1:]
      out[k] = jax.make_array_from_process_local_data(
          self.data_sharding, v, global_shape)
    return out

  def jit(self, fn: Callable, in_shardings, out_shardings,
          donate_argnums=()) -> Callable:
    """jit with shardings; calls trace and run inside `context()`."""
    jitted = jax.jit(fn, in_shardings=in_shardings,
                     out_shardings=out_shardings,
                     donate_argnums=donate_argnums)

    @functools.wraps(fn)
    def call(*args):
      with self.context():
        return jitted(*args)

    def lower(*args):
      with self.context():
        return jitted.lower(*args)
    # Ahead-of-time lowering (XLA cost and memory analysis) in the same scope.
    call.lower = lower
    return call


def _first_occurrences(logical: Optional[P]) -> Optional[P]:
  """A dim can be split over a mesh axis only once: a logical name that
  repeats (a square [t, t] kernel) is replicated after its first dim."""
  if logical is None:
    return None
  seen, names = set(), []
  for name in logical:
    names.append(None if name in seen else name)
    if isinstance(name, str):
      seen.add(name)
  return P(*names)


def _moment_sharding(sharding: NamedSharding, param_shape, leaf_shape,
                     mesh: Mesh) -> NamedSharding:
  spec = tuple(sharding.spec) + (None,) * (len(param_shape) -
                                            len(sharding.spec))
  if leaf_shape == tuple(param_shape):
    return sharding
  if len(param_shape) >= 2:
    if leaf_shape == tuple(param_shape[:-1]):
      return NamedSharding(mesh, P(*spec[:-1]))
    if leaf_shape == tuple(param_shape[:-2]) + tuple(param_shape[-1:]):
      return NamedSharding(mesh, P(*(spec[:-2] + spec[-1:])))
  return NamedSharding(mesh, P())
