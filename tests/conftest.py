"""Shared test settings.

One torch thread: the suite's models are tiny, where a second thread costs more in synchronisation than
it gains (measured ~10x slower training on a loaded 2-core machine), and one thread makes float
reductions run in the same order everywhere, so seeded results repeat exactly.
"""

import torch

torch.set_num_threads(1)
