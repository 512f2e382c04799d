"""The torch side of soft prompts: a prompt encoder and a body wrapper that prepends its output.

Learned vectors go in front of the input embeddings (prompt tuning, Lester et al. 2021),
optionally produced by a small MLP or LSTM encoder (p-tuning, Liu et al. 2021). The wrapper
strips the virtual positions from what the model returns, so callers see exactly the
sequence they passed in: a classification head pools over its own attention mask, and
causal-LM logits line up with the labels.
"""

from __future__ import annotations

import torch
from torch import nn

from llmtune.errors import UserError

IGNORE_INDEX = -100


class PromptEncoder(nn.Module):
    """Produces the (num_tokens, dim) prompt. `kind` none: the embedding is the prompt;
    mlp: embedding -> Linear-ReLU-Linear; lstm: embedding -> 2-layer BiLSTM -> that MLP."""

    def __init__(self, num_tokens: int, dim: int, kind: str = "none", hidden: int = 256,
                 init: torch.Tensor | None = None):
        super().__init__()
        self.kind = kind
        if init is None:
            init = torch.randn(num_tokens, dim)
        self.embedding = nn.Parameter(init.detach().clone().float())
        self.lstm = None
        self.mlp = None
        if kind == "lstm":
            self.lstm = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        elif kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        elif kind != "none":
            raise ValueError(f"unknown prompt encoder {kind!r}")

    def forward(self) -> torch.Tensor:
        x = self.embedding
        if self.lstm is not None:
            x = self.lstm(x.unsqueeze(0))[0].squeeze(0)
        if self.mlp is not None:
            x = self.mlp(x)
        return x


class PromptedModel(nn.Module):
    """A transformers model (bare encoder or causal LM) with a learned prompt in front.

    Not a PreTrainedModel: it forwards `config`, `generation_config` and the embedding
    accessors, and offers forward() and generate() with the base model's signatures for
    the arguments llmtune uses (input_ids, attention_mask, labels)."""

    def __init__(self, base: nn.Module, prompt: PromptEncoder):
        super().__init__()
        self.base = base
        self.prompt = prompt

    @property
    def config(self):
        return self.base.config

    @property
    def generation_config(self):
        return self.base.generation_config

    @property
    def num_virtual_tokens(self) -> int:
        return self.prompt.embedding.shape[0]

    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    def get_output_embeddings(self):
        return self.base.get_output_embeddings()

    def _prepend(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        batch, n = input_ids.shape[0], self.num_virtual_tokens
        limit = getattr(self.config, "max_position_embeddings", None)
        if limit is not None and input_ids.shape[1] + n > limit:
            raise UserError(f"{input_ids.shape[1]} tokens + {n} virtual tokens exceed the model's "
                            f"{limit} positions; lower data.max_length to {limit - n} or method.num_virtual_tokens")
        embeds = self.base.get_input_embeddings()(input_ids)
        prompt = self.prompt().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ones = torch.ones(batch, n, dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat([prompt, embeds], dim=1), torch.cat([ones, attention_mask], dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None, cache=None,
                **kwargs):
        """`position_ids` and the mask count real tokens only (as for the base model); the
        virtual positions come first. With a KV cache (llmtune.generation's decoder), the first
        call puts the prompt in front and fills the cache with it; later calls, one new token
        each, find the prompt in the cache and only widen the mask over it."""
        n = self.num_virtual_tokens
        if cache is not None:
            kwargs["cache"] = cache  # (passed on only when given: an encoder's forward takes none)
        if cache is not None and cache.get_seq_length() > 0:
            if attention_mask is not None:
                ones = attention_mask.new_ones((attention_mask.shape[0], n))
                attention_mask = torch.cat([ones, attention_mask], dim=1)
            if position_ids is not None:
                position_ids = position_ids + n
            return self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        embeds, mask = self._prepend(input_ids, attention_mask)
        if position_ids is not None:
            first = torch.arange(n, device=position_ids.device).expand(position_ids.shape[0], n)
            kwargs["position_ids"] = torch.cat([first, position_ids + n], dim=1)
        if labels is not None:
            # The model shifts labels by one: the last virtual position would be scored on
            # the first real token, a term the base model's loss does not have. Only real
            # positions predict, so the loss means what it means without a prompt.
            skip = torch.full((labels.shape[0], n + 1), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            kwargs["labels"] = torch.cat([skip, labels[:, 1:]], dim=1)
        out = self.base(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        for key in ("logits", "last_hidden_state"):
            # (logits_to_keep may have asked for the last positions only: nothing virtual in them)
            if out.get(key) is not None and out[key].shape[1] == embeds.shape[1]:
                out[key] = out[key][:, n:]
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """Like the base model's generate(): returns input_ids followed by the new tokens."""
        embeds, mask = self._prepend(input_ids, attention_mask)
        # Given only embeddings, a decoder-only generate() returns just the new tokens.
        new = self.base.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


def embedding_std(model: nn.Module) -> float:
    """Scale of the model's word embeddings: random prompts start at the size real tokens have."""
    return model.get_input_embeddings().weight.detach().float().std().item()


def vocab_init(model: nn.Module, num_tokens: int) -> torch.Tensor:
    """Embeddings of randomly drawn vocabulary tokens (Lester et al.'s "sampled vocab")."""
    table = model.get_input_embeddings().weight.detach()
    return table[torch.randint(0, table.shape[0], (num_tokens,))].float()


def text_init(model: nn.Module, token_ids: list[int], num_tokens: int) -> torch.Tensor:
    """Embeddings of the init text's tokens, repeated or cut to num_tokens."""
    table = model.get_input_embeddings().weight.detach()
    ids = [token_ids[i % len(token_ids)] for i in range(num_tokens)]
    return table[torch.tensor(ids)].float()
