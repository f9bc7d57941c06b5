"""A small Temporal Fusion Transformer (Lim et al., 2021) for multi-step quantile forecasts.

Blocks carry the paper's names so a reader can hold the code against Figure 2: GatedLinearUnit, GateAddNorm,
GatedResidualNetwork, VariableSelectionNetwork, StaticCovariateEncoder, the LSTM encoder-decoder ("sequence to
sequence layer"), static enrichment, InterpretableMultiHeadAttention (here ``nn.MultiheadAttention`` with
``batch_first=True`` and a causal mask over encoder+decoder steps, never a hand-rolled reshape) and a quantile head
that is monotone by construction (the median plus cumulative softplus offsets), trained with QuantileLoss.

Shapes use B (batch), L (input days), H (horizon days), T = L + H, D (hidden size), V (variables), Q (quantiles).
Every block is batch-first and is tested at its boundaries for several B, L and H, including B = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedLinearUnit(nn.Module):
    """GLU(x) = sigmoid(W1 x) * (W2 x), computed with one matmul."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_out)
        out: torch.Tensor = F.glu(self.proj(self.dropout(x)), dim=-1)
        return out


class GateAddNorm(nn.Module):
    """LayerNorm(skip + GLU(x)): the gated residual connection used throughout the TFT."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.glu = GatedLinearUnit(d_in, d_out, dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.norm(skip + self.glu(x))
        return out


class GatedResidualNetwork(nn.Module):
    """GRN(a, c) = LayerNorm(a + GLU(W1 ELU(W2 a + W3 c))), with a projected skip when sizes differ."""

    def __init__(
        self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0, d_context: int | None = None
    ):
        super().__init__()
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.context = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.gate = GateAddNorm(d_hidden, d_out, dropout)

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.fc1(a)  # (..., D)
        if self.context is not None and c is not None:
            hidden = hidden + self.context(c)
        hidden = self.fc2(F.elu(hidden))
        out: torch.Tensor = self.gate(hidden, self.skip(a))
        return out


class VariableSelectionNetwork(nn.Module):
    """Embeds each of V scalar variables to D (one Linear(1, D) per variable, as one broadcast multiply), weighs
    them with a softmax from a GRN over the raw variables and the static context, and returns the weighted sum.

    The paper also runs a GRN per variable; for scalar inputs that costs V times the compute of the whole encoder
    for no measurable gain here, so each variable's transform is its linear embedding (the LSTM that follows is
    the non-linearity)."""

    def __init__(self, n_vars: int, d: int, dropout: float = 0.0, d_context: int | None = None):
        super().__init__()
        self.n_vars = n_vars
        self.embed_weight = nn.Parameter(torch.randn(n_vars, d) * (1.0 / n_vars**0.5))
        self.embed_bias = nn.Parameter(torch.zeros(n_vars, d))
        self.selection = GatedResidualNetwork(n_vars, d, n_vars, dropout, d_context)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, V); c: (B, D) or None
        ctx = c.unsqueeze(1) if c is not None else None  # (B, 1, D)
        # Softmax over the V variables, taken on a (B, V, T) view: on CPU the last-dim softmax kernel is ~5x
        # slower (forward and backward) for a last dimension this short. Same values, same layout afterwards.
        logits = self.selection(x, ctx).transpose(-1, -2)  # (B, V, T) view
        weights = torch.softmax(logits, dim=-2).transpose(-1, -2)  # (B, T, V)
        # sum_v w_v * (x_v * W_v + b_v) = (w * x) @ W + w @ b: two (B*T, V) x (V, D) matmuls instead of
        # materialising the (B, T, V, D) embeddings.
        mixed = (weights * x) @ self.embed_weight + weights @ self.embed_bias  # (B, T, D)
        return mixed, weights


class StaticCovariateEncoder(nn.Module):
    """Symbol embedding -> four context vectors: variable selection, enrichment, LSTM h0 and c0.

    Row ``n_symbols`` of the embedding is the learned "any symbol" embedding: training replaces a share of the
    windows' symbols by it (symbol dropout), and a symbol the model never saw is scored with it (zero-shot)."""

    def __init__(self, n_symbols: int, d: int, dropout: float = 0.0):
        super().__init__()
        self.any_symbol = n_symbols
        self.embedding = nn.Embedding(n_symbols + 1, d)
        # The paper's four context GRNs, computed as one GRN with a 4*D output (one set of kernels, not four).
        self.grns = GatedResidualNetwork(d, d, 4 * d, dropout)

    def forward(self, symbol: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (B,) -> 4 x (B, D)
        s = self.embedding(symbol)  # (B, D)
        c_selection, c_enrichment, c_h, c_c = self.grns(s).chunk(4, dim=-1)  # 4 x (B, D)
        return c_selection, c_enrichment, c_h, c_c


class QuantileHead(nn.Module):
    """(B, H, D) -> (B, H, Q) quantiles, monotone by construction: the median plus/minus cumulative softplus."""

    def __init__(self, d: int, quantiles: list[float]):
        super().__init__()
        self.n = len(quantiles)
        self.median_index = quantiles.index(0.5)
        self.proj = nn.Linear(d, self.n)
        nn.init.zeros_(self.proj.weight)  # start at the persistence forecast (zero return) ...
        with torch.no_grad():  # ... with a band of about +-1 scaled unit
            self.proj.bias.fill_(0.0)
            self.proj.bias[torch.arange(self.n) != self.median_index] = 0.55

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.proj(x)  # (B, H, Q)
        m = self.median_index
        median = raw[..., m : m + 1]
        steps = F.softplus(raw)
        upper = median + torch.cumsum(steps[..., m + 1 :], dim=-1)
        lower = median - torch.cumsum(steps[..., :m].flip(-1), dim=-1).flip(-1)
        return torch.cat([lower, median, upper], dim=-1)


class TemporalFusionTransformer(nn.Module):
    def __init__(
        self,
        n_observed: int,
        n_known: int,
        n_symbols: int,
        horizon: int,
        hidden_size: int = 32,
        attention_heads: int = 4,
        lstm_layers: int = 1,
        dropout: float = 0.1,
        quantiles: list[float] | None = None,
    ):
        super().__init__()
        d = hidden_size
        self.horizon = horizon
        self.quantiles = quantiles or [0.1, 0.5, 0.9]
        self.static = StaticCovariateEncoder(n_symbols, d, dropout)
        # Dropout sits after the LSTM (enrichment, attention, position-wise): on a CPU each dropout mask over the
        # (B, L+H, D) sequence costs as much as a matmul, and regularising the input selection gained nothing here.
        self.encoder_vsn = VariableSelectionNetwork(n_observed + n_known, d, 0.0, d_context=d)
        self.decoder_vsn = VariableSelectionNetwork(n_known, d, 0.0, d_context=d)
        self.lstm_layers = lstm_layers
        self.encoder_lstm = nn.LSTM(
            d, d, lstm_layers, batch_first=True, dropout=dropout if lstm_layers > 1 else 0
        )
        self.decoder_lstm = nn.LSTM(
            d, d, lstm_layers, batch_first=True, dropout=dropout if lstm_layers > 1 else 0
        )
        self.lstm_gate = GateAddNorm(d, d, 0.0)
        self.static_enrichment = GatedResidualNetwork(d, d, d, dropout, d_context=d)
        self.attention = nn.MultiheadAttention(d, attention_heads, dropout=dropout, batch_first=True)
        self.attention_gate = GateAddNorm(d, d, dropout)
        self.positionwise = GatedResidualNetwork(d, d, d, dropout)
        self.output_gate = GateAddNorm(d, d, 0.0)
        self.head = QuantileHead(d, self.quantiles)
        self._mask_cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def causal_mask(self, n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
        """(H, T) bool, True = masked: decoder step j (absolute L+j) sees steps <= L+j only."""
        t = n_in + n_out
        q_pos = torch.arange(n_in, t, device=device).unsqueeze(1)  # (H, 1)
        k_pos = torch.arange(t, device=device).unsqueeze(0)  # (1, T)
        return k_pos > q_pos

    def attention_mask(self, n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
        """The causal mask as the additive float mask (-inf = masked) that MultiheadAttention uses, in ``like``'s
        dtype and device, cached: given a bool mask it would convert it again on every call."""
        key = (n_in, n_out, like.device, like.dtype)
        if key not in self._mask_cache:
            mask = torch.zeros(n_out, n_in + n_out, dtype=like.dtype, device=like.device)
            self._mask_cache[key] = mask.masked_fill_(
                self.causal_mask(n_in, n_out, like.device), float("-inf")
            )
        return self._mask_cache[key]

    def forward(self, observed: torch.Tensor, known: torch.Tensor, symbol: torch.Tensor) -> torch.Tensor:
        """observed (B, L, F_obs), known (B, L+H, F_known), symbol (B,) -> quantiles (B, H, Q) (scaled returns)."""
        out, _ = self._forward(observed, known, symbol, need_weights=False)
        return out

    def interpret(
        self, observed: torch.Tensor, known: torch.Tensor, symbol: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The quantiles (B, H, Q) plus what the model looked at: ``encoder_variables`` (B, L, V_enc), observed
        then known, as concatenated; ``decoder_variables`` (B, H, V_dec); ``attention`` (B, H, T), heads averaged,
        each row summing to 1 and 0 on masked keys. Call it in eval mode: in training the attention is dropped."""
        out, weights = self._forward(observed, known, symbol, need_weights=True)
        assert weights is not None
        return out, weights

    def _forward(
        self, observed: torch.Tensor, known: torch.Tensor, symbol: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        # need_weights is fixed per call site, never data-dependent: forward's path stays capturable.
        B, L, _ = observed.shape
        H = self.horizon
        c_sel, c_enr, c_h, c_c = self.static(symbol)  # 4 x (B, D)
        past = torch.cat([observed, known[:, :L]], dim=-1)  # (B, L, F_obs + F_known)
        enc_in, enc_weights = self.encoder_vsn(past, c_sel)  # (B, L, D), (B, L, V_enc)
        dec_in, dec_weights = self.decoder_vsn(known[:, L:], c_sel)  # (B, H, D), (B, H, V_dec)
        h0 = c_h.unsqueeze(0).expand(self.lstm_layers, B, -1).contiguous()  # (layers, B, D)
        c0 = c_c.unsqueeze(0).expand(self.lstm_layers, B, -1).contiguous()
        enc_out, state = self.encoder_lstm(enc_in, (h0, c0))  # (B, L, D)
        dec_out, _ = self.decoder_lstm(dec_in, state)  # (B, H, D)
        lstm_out = torch.cat([enc_out, dec_out], dim=1)  # (B, T, D)
        vsn_out = torch.cat([enc_in, dec_in], dim=1)  # (B, T, D)
        temporal = self.lstm_gate(lstm_out, vsn_out)  # (B, T, D)
        enriched = self.static_enrichment(temporal, c_enr.unsqueeze(1))  # (B, T, D)
        query = enriched[:, L:]  # (B, H, D)
        mask = self.attention_mask(L, H, enriched)  # (H, T), float
        attn, attn_weights = self.attention(  # (B, H, D), (B, H, T) averaged over heads or None
            query, enriched, enriched, attn_mask=mask, need_weights=need_weights, average_attn_weights=True
        )
        x = self.attention_gate(attn, query)  # (B, H, D)
        x = self.positionwise(x)  # (B, H, D)
        x = self.output_gate(x, temporal[:, L:])  # (B, H, D)
        out: torch.Tensor = self.head(x)  # (B, H, Q)
        if not need_weights:
            return out, None
        return out, {
            "encoder_variables": enc_weights,
            "decoder_variables": dec_weights,
            "attention": attn_weights,
        }


class QuantileLoss(nn.Module):
    """Pinball loss averaged over quantiles, horizon steps and the batch."""

    def __init__(self, quantiles: list[float]):
        super().__init__()
        self.register_buffer("q", torch.tensor(quantiles, dtype=torch.float32))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # pred (B, H, Q), target (B, H)
        err = target.unsqueeze(-1) - pred  # (B, H, Q)
        q = self.get_buffer("q")
        return torch.maximum(q * err, (q - 1) * err).mean()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
