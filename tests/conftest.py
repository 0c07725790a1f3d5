"""Shared test settings: small thread pools keep the suite fast and stable on a 2-core machine."""

import torch

torch.set_num_threads(2)
