"""Tensor-parallel sizes that do not divide the model are refused, naming what does not divide."""

import pytest

from megamerge.parallel.tensor_parallel import TensorParallelSizeError, check_tensor_parallel_sizes


@pytest.mark.parametrize("heads,ffn,tp,what", [(4, 352, 3, "attention heads"), (4, 350, 4, "FFN width")])
def test_indivisible_heads_or_ffn_are_refused(heads, ffn, tp, what):
    with pytest.raises(TensorParallelSizeError, match=what):
        check_tensor_parallel_sizes(heads, ffn, tp)
