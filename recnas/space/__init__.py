"""Search spaces, the architecture encoding, samplers and mutation."""

from recnas.space.arch import Architecture, BlockSpec
from recnas.space.spaces import SearchSpace, get_space, resolve_space

__all__ = ["Architecture", "BlockSpec", "SearchSpace", "get_space", "resolve_space"]
