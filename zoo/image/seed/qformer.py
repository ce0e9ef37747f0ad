"""SEED's causal Q-Former: BLIP-2's Q-Former (BERT-base layout) whose 32 learned queries attend causally.

Per layer l (post-norm, as BERT):

    a = LN(a_in + SelfAttn(a_in))                      queries attend to queries <= themselves (causal)
    a = LN(a + CrossAttn(a, image tokens))             only when l % cross_attention_freq == 0
    h = LN(a + FFN_query(a))                           `intermediate_query` / `output_query` in BERT names

The queries go through `embeddings.LayerNorm` first; they have no word or position embeddings. The text side (word
and position embeddings and each layer's text FFN, `intermediate` / `output`) only serves the stage-1 image-text
contrastive training (https://arxiv.org/abs/2307.08041 section 3.1): text shares the self-attention but never
cross-attends, and it is built only with `text_vocab_size`.

The official `BertModel.forward` turns the causal mask on exactly when 32 queries are passed and uses an additive
-10000 mask; a boolean mask gives the same softmax in float32 (exp(-10000) underflows to 0 either way).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.nn import Attention, Mlp

__all__ = ["CausalQFormer", "QFormerLayer"]


class QFormerLayer(nn.Module):
    """One BERT layer of the Q-Former: self-attention, optional cross-attention, the query FFN (and a text FFN).

    Parameter names (ours <- official BERT): `self_attn.{q,k,v,proj}` <- `attention.self.{query,key,value}`,
    `attention.output.dense`; `self_norm` <- `attention.output.LayerNorm`; `cross_attn`, `cross_norm` <-
    `crossattention.*`; `mlp.fc1`, `mlp.fc2`, `mlp_norm` <- `intermediate_query.dense`, `output_query.dense`,
    `output_query.LayerNorm`; `text_mlp`, `text_norm` <- `intermediate`, `output`.
    """

    def __init__(self, dim: int, num_heads: int, intermediate: int, context_dim: int | None, text: bool,
                 norm_eps: float, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        attention = {"num_heads": num_heads, "fused_qkv": False, "qkv_bias": True, "attn_drop": attn_dropout,
                     "proj_drop": dropout}
        self.self_attn = Attention(dim, **attention)
        self.self_norm = nn.LayerNorm(dim, eps=norm_eps)
        if context_dim is not None:
            self.cross_attn = Attention(dim, kv_dim=context_dim, **attention)
            self.cross_norm = nn.LayerNorm(dim, eps=norm_eps)
        else:
            self.cross_attn = self.cross_norm = None
        self.mlp = Mlp(dim, intermediate, act="gelu", drop=0.0)
        self.mlp_drop = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(dim, eps=norm_eps)
        if text:
            self.text_mlp = Mlp(dim, intermediate, act="gelu", drop=0.0)
            self.text_norm = nn.LayerNorm(dim, eps=norm_eps)
        else:
            self.text_mlp = self.text_norm = None

    def forward_queries(self, h: torch.Tensor, context: torch.Tensor, causal: bool) -> torch.Tensor:
        """Queries `[B, Q, dim]` attending to each other (causally when `causal`) and to `context` `[B, M, C]`."""
        a = self.self_norm(h + self.self_attn(h, is_causal=causal))
        if self.cross_attn is not None:
            a = self.cross_norm(a + self.cross_attn(a, context))
        return self.mlp_norm(a + self.mlp_drop(self.mlp(a)))

    def forward_text(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """Text tokens `[B, L, dim]` (bidirectional; `padding` `[B, L]` True at pad positions); no cross-attention."""
        if self.text_mlp is None:
            raise ValueError("this Q-Former has no text side; build the model with text_vocab_size")
        a = self.self_norm(h + self.self_attn(h, key_padding_mask=padding))
        return self.text_norm(a + self.mlp_drop(self.text_mlp(a)))


class CausalQFormer(nn.Module):
    """Learned queries -> `depth` Q-Former layers over image tokens -> query features `[B, Q, dim]`.

    Args:
        dim, depth, num_heads, intermediate: BERT size (768, 12, 12, 3072 for BERT-base).
        context_dim: width of the image tokens (the ViT width).
        num_queries: learned query tokens (32).
        cross_attention_freq: layers l with l % freq == 0 cross-attend (2; `init_Qformer` hard-codes it in SEED).
        causal: lower-triangular self-attention among the queries (what the official code does for 32 queries).
        norm_eps: LayerNorm epsilon (BERT's 1e-12).
        dropout, attn_dropout: BERT's hidden and attention-probability dropout (0.1 in bert-base; training only).
        text_vocab_size: build the text side with this many word embeddings (None: no text side).
        max_text_len: rows of the text position table (BERT's 512).
    """

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, intermediate: int = 3072,
                 context_dim: int = 1408, num_queries: int = 32, cross_attention_freq: int = 2, causal: bool = True,
                 norm_eps: float = 1e-12, dropout: float = 0.0, attn_dropout: float = 0.0,
                 text_vocab_size: int | None = None, max_text_len: int = 512) -> None:
        super().__init__()
        if cross_attention_freq < 1:
            raise ValueError(f"cross_attention_freq must be >= 1, got {cross_attention_freq}")
        self.causal = causal
        self.num_queries = num_queries
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.embed_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.embed_drop = nn.Dropout(dropout)
        text = text_vocab_size is not None
        self.layers = nn.ModuleList(
            QFormerLayer(dim, num_heads, intermediate, context_dim if i % cross_attention_freq == 0 else None, text,
                         norm_eps, dropout, attn_dropout)
            for i in range(depth)
        )
        if text:
            self.word_embed = nn.Embedding(text_vocab_size, dim, padding_idx=0)
            self.text_pos_embed = nn.Embedding(max_text_len, dim)
        else:
            self.word_embed = self.text_pos_embed = None
        self._init_bert()

    def _init_bert(self) -> None:
        """BERT's initialisation (`initializer_range` 0.02), which BLIP-2 also uses for the query tokens."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.word_embed is not None:
            with torch.no_grad():
                self.word_embed.weight[0].zero_()  # padding_idx row
        nn.init.normal_(self.query_tokens, std=0.02)

    def forward(self, context: torch.Tensor, return_hidden: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Image tokens `[B, M, context_dim]` -> query features `[B, Q, dim]`; with `return_hidden` also the hidden
        states after the embedding norm and after each layer (BERT's `output_hidden_states`)."""
        h = self.embed_drop(self.embed_norm(self.query_tokens.expand(context.shape[0], -1, -1)))
        hidden = [h]
        for layer in self.layers:
            h = layer.forward_queries(h, context, self.causal)
            hidden.append(h)
        return (h, hidden) if return_hidden else h

    def encode_text(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids `[B, L]` (`attention_mask` 1 for real tokens) -> text features `[B, L, dim]`."""
        if self.word_embed is None:
            raise ValueError("this Q-Former has no text side; build the model with text_vocab_size")
        if ids.shape[1] > self.text_pos_embed.num_embeddings:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds max_text_len {self.text_pos_embed.num_embeddings}")
        if int(ids.max()) >= self.word_embed.num_embeddings or int(ids.min()) < 0:
            raise ValueError(f"text token ids must lie in [0, {self.word_embed.num_embeddings}); got "
                             f"[{int(ids.min())}, {int(ids.max())}]: is the vocabulary larger than text_vocab_size?")
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = self.embed_drop(self.embed_norm(self.word_embed(ids) + self.text_pos_embed(positions)[None]))
        padding = None if attention_mask is None else attention_mask == 0
        for layer in self.layers:
            h = layer.forward_text(h, padding)
        return h
