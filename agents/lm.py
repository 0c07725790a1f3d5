"""The language model as an actor-critic: the policy is the LM, the critic a linear value head on its trunk.

    policy = LMActorCritic(sft_path(), sampling=env_sampling(env))    # or any causal LM name / path / module
    env = gym.make_vec("TextGen-v0", num_envs=16, vectorization_mode="vector_entry_point", policy=policy)
    agent = PPO(env, policy=policy, config=PPOConfig(minibatch_by="env", gamma=1.0, ...))

Lecture slides, "How do we estimate V(s)?": an additional Linear layer on top of the language model reads
the last-layer hidden state of a position and outputs the value of the state that ends there. It starts at
zero, so the first value targets are learnt from a critic that claims nothing.

Two ways to run the same network:

- acting (``forward``, ``act``, ``next_token_logits``): one token per step through an ``IncrementalLM``
  (KV cache). Given to the env as ``policy=`` (mode a) the env's KL and the agent's action read the SAME
  forward: the second call with the same input is a memo hit.
- re-scoring in the PPO update (``evaluate_actions``): the rows of a minibatch are the steps of a few
  episodes. Each row's full sequence is its real input plus its action; a row whose input is another row's
  full sequence is the next step of the same episode. One forward per chain leaf (the longest sequence)
  scores every step on the chain at once, instead of one forward per generated token.

The log-probabilities are those of ``sampling.sampling_logits(logits)`` (temperature, top-k, top-p), the
distribution the tokens were sampled from (ARCHITECTURE.md, "Sampling").
"""

from __future__ import annotations

import copy
import inspect
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from agents.policies import ActorCritic
from rlcore.device import resolve_device
from transformers.modeling_layers import GradientCheckpointingLayer

from textenv.text.decoding import IncrementalLM, cache_keyword
from textenv.text.loading import load_causal_lm
from textenv.text.sampling import SamplingConfig


def env_sampling(env) -> SamplingConfig:
    """The ``SamplingConfig`` of a TextGen env, vector env or a wrapper around either."""
    for candidate in (env, getattr(env, "unwrapped", None), getattr(env, "env", None)):
        sampling = getattr(candidate, "sampling", None)
        if isinstance(sampling, SamplingConfig):
            return sampling
    raise AttributeError(f"{type(env).__name__} has no SamplingConfig at .sampling: is it a TextGen-v0 env?")


def load_trunk(spec, device: torch.device) -> nn.Module:
    """The transformer trunk (no head) of a module or checkpoint: a causal LM, a reward model, or a bare trunk.

    A module is deep-copied, so training the critic never changes the reward model it started from.
    """
    if isinstance(spec, nn.Module):
        base = getattr(spec, "base_model", spec)
        return copy.deepcopy(base).to(device)
    if isinstance(spec, (str, Path)):
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(spec)).to(device)  # the trunk of any *For* checkpoint
    raise TypeError(f"the critic trunk must be a module, a name or a path, got {type(spec).__name__}")


class _TrunkAsLM(nn.Module):
    """Lets ``IncrementalLM`` KV-cache a bare trunk (no LM head): it only reads hidden states and the cache."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

        self._cache_kw = cache_keyword(trunk)

    def forward(self, input_ids, attention_mask, position_ids, cache, use_cache, output_hidden_states):
        # IncrementalLM fills ``cache`` in place, so only the logits and hidden states are returned.
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, output_hidden_states=True, **{self._cache_kw: cache})
        logits = out.last_hidden_state.new_zeros(input_ids.shape[0], 1, 1)  # unused
        return _Out(logits=logits, hidden_states=out.hidden_states)


@dataclass
class _Out:
    logits: Tensor
    hidden_states: tuple


@dataclass
class SequencePlan:
    """How a minibatch of single steps is scored with one forward per episode chain."""

    ids: Tensor
    """(n_leaves, S) the leaf sequences (real input + action), left-padded."""
    mask: Tensor
    """(n_leaves, S) their attention mask."""
    leaf: Tensor
    """(B,) the leaf sequence each row is read from."""
    col: Tensor
    """(B,) the column of that leaf whose logits predict the row's action (its last input token)."""


def plan_sequences(input_ids: Tensor, attention_mask: Tensor, actions: Tensor, pad_id: int = 0) -> SequencePlan:
    """Group the rows of a batch into chains of steps and pick the sequences to run.

    Row i's full sequence is its real (unpadded) input followed by its action. Identical full sequences
    are scored once; a sequence whose input equals another's full sequence is that one's successor, and
    following successors ends at a leaf that contains every sequence on the way as a prefix. Left padding
    and ``position_ids = cumsum(mask) - 1`` make the prefix's logits in the leaf the same as its own.

    Args:
        input_ids, attention_mask: (B, L) left-padded observations.
        actions: (B,) the token taken after each.
    """
    ids, mask, acts = (x.detach().cpu().numpy() for x in (input_ids, attention_mask, actions))
    B, L = ids.shape
    lengths = mask.sum(1)
    if (lengths == 0).any() or any(not mask[i, L - n:].all() for i, n in enumerate(lengths)):
        raise ValueError("observations must be LEFT-padded with at least one real token (ARCHITECTURE.md)")
    seqs = [tuple(ids[i, L - n:].tolist()) + (int(acts[i]),) for i, n in enumerate(lengths)]
    node: dict[tuple, int] = {}  # unique full sequence -> node id
    row_node = [node.setdefault(s, len(node)) for s in seqs]
    keys = list(node)
    child = [-1] * len(keys)
    for u, s in enumerate(keys):
        parent = node.get(s[:-1])
        if parent is not None:
            child[parent] = u  # with several successors (a shared prefix), any one will do
    leaf_of = list(range(len(keys)))
    for u in sorted(range(len(keys)), key=lambda u: -len(keys[u])):  # successors are longer: resolve them first
        if child[u] >= 0:
            leaf_of[u] = leaf_of[child[u]]
    leaves = sorted(set(leaf_of))
    leaf_index = {u: k for k, u in enumerate(leaves)}
    S = max(len(keys[u]) for u in leaves)
    leaf_ids = np.full((len(leaves), S), pad_id, dtype=np.int64)
    leaf_mask = np.zeros((len(leaves), S), dtype=np.int64)
    for k, u in enumerate(leaves):
        leaf_ids[k, S - len(keys[u]):] = keys[u]
        leaf_mask[k, S - len(keys[u]):] = 1
    row_leaf = np.array([leaf_index[leaf_of[u]] for u in row_node], dtype=np.int64)
    # The action of a row with full length n sits at column start + n - 1; its logits at start + n - 2.
    row_col = np.array(
        [S - len(keys[leaves[row_leaf[i]]]) + len(seqs[i]) - 2 for i in range(B)], dtype=np.int64
    )
    dev = input_ids.device
    return SequencePlan(*(torch.from_numpy(a).to(dev) for a in (leaf_ids, leaf_mask, row_leaf, row_col)))


def logprob_and_entropy(logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """log pi(a) and the entropy of softmax(logits); ``-inf`` logits (top-k / top-p) give no NaN.

    Args:
        logits: (B, V) logits of the sampling distribution, possibly with ``-inf`` entries.
        actions: (B,) token ids.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    # 0 * log 0 = 0, and the masked_fill keeps the backward pass free of 0 * inf as well.
    finite = logp.masked_fill(torch.isinf(logp), 0.0)
    entropy = -(logp.exp() * finite).sum(-1)
    return logp.gather(-1, actions.long()[:, None])[:, 0], entropy


def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


class LMActorCritic(ActorCritic):
    """A causal LM policy with a value head, for TextGen-v0 observations.

    Args:
        model: the policy LM: a ``transformers`` causal LM module (trained in place) or a name / path loaded
            with ``AutoModelForCausalLM``. Pass a fresh copy, not the env's reference model.
        sampling: the env's ``SamplingConfig`` (``env_sampling(env)``); log-probs and entropy are computed
            under it.
        critic: "shared": the value head reads the policy's own last hidden state. "separate": a second
            trunk (``critic_model``) with its own head; the policy and the critic then share no parameters.
        critic_model: the separate critic's starting trunk: a module or path of a causal LM, a reward model
            (``AutoModelForSequenceClassification``: its base model is used) or a trunk. Default: a copy
            of the policy's trunk.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        mixed_precision: run the update's forward under bf16 autocast on CUDA, and in the RLHF update on a
            CPU that multiplies bf16 natively (AVX512-BF16 / AMX); ignored elsewhere. Log-probabilities,
            log-sum-exp and entropy are computed in float32 either way.
        lora: an ``agents.rlhf.LoRAConfig``: only a LoRA adapter (``agents.lora.add_lora``) and the value
            head train; ``reference_context()`` switches the adapter off, so an env given this policy and its
            ``model`` as the reference runs the base model from the same weights. Needs ``critic="shared"``.
        gradient_checkpointing: recompute the LM's activations in the update's backward pass (the HF model's
            ``gradient_checkpointing_enable``, non-reentrant): less memory, about one more forward.
    """

    def __init__(
        self,
        model,
        sampling: SamplingConfig | None = None,
        critic: str = "shared",
        critic_model=None,
        device: str | torch.device = "auto",
        mixed_precision: bool = False,
        lora=None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if critic not in ("shared", "separate"):
            raise ValueError(f"critic must be 'shared' or 'separate', got {critic!r}")
        if lora is not None and critic != "shared":
            raise ValueError("lora needs critic='shared': the value head reads the adapted trunk")
        dev = resolve_device(device)
        self.model = load_causal_lm(model, dev).to(dev)  # a module is moved: the policy owns its copy
        self._peft: tuple = ()  # (peft.PeftModel,): a tuple, so its modules are not registered a second time
        if lora is not None:
            from agents.lora import add_lora

            self.model, peft_model = add_lora(self.model, lora)
            self._peft = (peft_model,)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing:
            # transformers 5.24 renamed gradient_checkpointing_enable (the old name warns until v6)
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        self.sampling = sampling or SamplingConfig()
        self.critic = critic
        self.mixed_precision = mixed_precision
        self.critic_trunk = None
        if critic == "separate":
            self.critic_trunk = load_trunk(self.model if critic_model is None else critic_model, dev)
        hidden = self._hidden_size(self.critic_trunk if critic == "separate" else self.model)
        self.value_head = nn.Linear(hidden, 1).to(dev)
        nn.init.zeros_(self.value_head.weight)  # V = 0 everywhere at the start
        nn.init.zeros_(self.value_head.bias)
        self._keep_kw = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._lm: IncrementalLM | None = None
        self._critic_lm: IncrementalLM | None = None
        self.train()

    @staticmethod
    def _hidden_size(module: nn.Module) -> int:
        cfg = module.config
        for name in ("hidden_size", "n_embd", "d_model"):
            if isinstance(getattr(cfg, name, None), int):
                return getattr(cfg, name)
        raise ValueError(f"cannot read the hidden size from {type(cfg).__name__}")

    def train(self, mode: bool = True) -> "LMActorCritic":
        """Dropout stays off in the transformers in both modes: rollouts and updates score the same function."""
        super().train(mode)
        self.model.eval()
        if self.critic_trunk is not None:
            self.critic_trunk.eval()
        if self.gradient_checkpointing:  # HF checkpoints a layer only when it is training; its dropouts stay off
            for layer in self.model.modules():
                if isinstance(layer, GradientCheckpointingLayer):
                    layer.training = mode
        return self

    # ------------------------------------------------------------------ LoRA: the reference and the checkpoint
    @property
    def reference_context(self):
        """With LoRA: a callable returning the context in which ``model`` is the base model (adapter off); else None."""
        return self._peft[0].disable_adapter if self._peft else None

    def reference_parameters(self) -> list[Tensor]:
        """The LM's frozen parameters: with LoRA, the base model's weights (the reference's)."""
        return [p for p in self.model.parameters() if not p.requires_grad]

    def trainable_state_dict(self) -> dict:
        """What a checkpoint needs: with LoRA the adapter, value head (and critic), not the frozen LM; else all."""
        if not self._peft:
            return self.state_dict()
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict) -> None:
        """Load ``trainable_state_dict``'s output; a key it does not hold, or a trainable one missing, is an error."""
        if not self._peft:
            self.load_state_dict(state)
            return
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(trainable - set(state)), sorted(set(state) - trainable)
        if missing or unexpected:
            raise RuntimeError(f"the saved adapter does not fit this LoRA policy: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]} (was it saved with other LoRA settings?)")
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ acting (no grad, KV-cached)
    @property
    def incremental(self) -> IncrementalLM:
        """The KV-cached runner of the policy LM (its ``stats`` count forwards and memo hits)."""
        device = next(self.model.parameters()).device
        if self._lm is None or self._lm.device != device:  # built lazily: PPO may move the module first
            self._lm = IncrementalLM(self.model)
        return self._lm

    def _critic_incremental(self) -> IncrementalLM:
        device = next(self.critic_trunk.parameters()).device
        if self._critic_lm is None or self._critic_lm.device != device:
            self._critic_lm = IncrementalLM(_TrunkAsLM(self.critic_trunk))
        return self._critic_lm

    def next_token_logits(self, input_ids, attention_mask) -> Tensor:
        """RAW next-token logits (N, V) of the policy; the env's mode (a) calls this after the agent acted (memo hit)."""
        return self.incremental(input_ids, attention_mask).logits

    @torch.no_grad()
    def forward(self, obs) -> tuple[Tensor, Tensor]:
        """Sampling-distribution logits (B, V) and values (B,) at the last position of each row."""
        ids, mask = obs["input_ids"], obs["attention_mask"]
        step = self.incremental(ids, mask)
        hidden = self._critic_incremental()(ids, mask).hidden if self.critic_trunk is not None else step.hidden
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)  # (B,)
        return self.sampling.sampling_logits(step.logits), values

    # ------------------------------------------------------------------ the RLHF update (one forward per response)
    def score_responses(self, ids: Tensor, mask: Tensor, prompt_cols: int, with_entropy_grad: bool = False):
        """log pi (B, T), entropy (B, T) and values (B, T) at every response position, one forward per response.

        Args:
            ids, mask: (B, P + T) the prompt left-padded to ``prompt_cols`` = P columns, then the response
                right-padded (``agents.rlhf.responses.Responses``). Position ids are ``cumsum(mask) - 1``, as
                while acting, so the logits are those the tokens were sampled from.
            with_entropy_grad: let gradients flow through the entropy (needed only for an entropy bonus).
        Only the T columns that predict response tokens get logits (``logits_to_keep``), and the
        log-probabilities come from one log-sum-exp, not a kept (B, T, V) log-softmax.
        """
        P = prompt_cols
        T = ids.shape[1] - P
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        use_amp = self.mixed_precision and (ids.device.type == "cuda" or _cpu_has_bf16())
        amp = torch.autocast(ids.device.type, dtype=torch.bfloat16) if use_amp else nullcontext()
        with amp:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                             output_hidden_states=self.critic_trunk is None,
                             **({"logits_to_keep": T + 1} if self._keep_kw else {}))
            logits = out.logits[:, -(T + 1):-1]  # (B, T, V): column P - 1 + t predicts response token t
            if self.critic_trunk is None:
                hidden = out.hidden_states[-1][:, P - 1:P - 1 + T]
            else:
                trunk = self.critic_trunk(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                hidden = trunk.last_hidden_state[:, P - 1:P - 1 + T]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        processed = self.sampling.sampling_logits(logits.float())  # (B, T, V)
        actions = ids[:, P:]
        logprob = processed.gather(-1, actions[..., None])[..., 0] - torch.logsumexp(processed, -1)
        with nullcontext() if with_entropy_grad else torch.no_grad():
            logp = torch.log_softmax(processed, -1)
            entropy = -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)
        return logprob, entropy, values

    # ------------------------------------------------------------------ the update (with grad, one forward per chain)
    def evaluate_actions(self, obs, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probs (B,), entropy (B,) and values (B,) of taken actions, one forward per episode chain.

        Use with ``PPOConfig(minibatch_by="env")`` so the steps of an episode share a minibatch; any batch
        is scored correctly, a shuffled one just needs more forwards.
        """
        plan = plan_sequences(obs["input_ids"], obs["attention_mask"], actions)
        pos = (plan.mask.cumsum(-1) - 1).clamp(min=0)  # (n, S) left padding does not shift positions
        use_amp = self.mixed_precision and plan.ids.device.type == "cuda"
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
        S = plan.ids.shape[1]
        keep = S - int(plan.col.min())  # only the columns some row reads need logits
        with amp:
            out = self.model(input_ids=plan.ids, attention_mask=plan.mask, position_ids=pos, use_cache=False,
                             output_hidden_states=self.critic_trunk is None,
                             **({"logits_to_keep": keep} if self._keep_kw else {}))
            logits = out.logits[plan.leaf, plan.col - (S - out.logits.shape[1])]  # (B, V)
            if self.critic_trunk is None:
                hidden = out.hidden_states[-1][plan.leaf, plan.col]  # (B, H)
            else:
                trunk = self.critic_trunk(input_ids=plan.ids, attention_mask=plan.mask, position_ids=pos, use_cache=False)
                hidden = trunk.last_hidden_state[plan.leaf, plan.col]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        logprob, entropy = logprob_and_entropy(self.sampling.sampling_logits(logits.float()), actions)
        return logprob, entropy, values.float()
