"""ABD-Net, "Attentive but Diverse" person ReID (Chen et al., ICCV 2019; facts from its reference code).

Network (ResNet-50, every stage-4 copy with stride 1):
- stem + stage 1 -> shallow channel attention (CAM) -> stages 2-3, shared;
- global branch: a copy of stage 4 -> average pooling -> Linear(2048 -> 1024) + BN + ReLU
  (+ dropout 0.5 before the classifier) -> classifier;
- attentive branch: another copy of stage 4 -> 1x1 conv (2048 -> 1024) + BN + ReLU, cut into 2
  horizontal parts; on each part three heads (DANet style: 3x3 conv to 512 + BN + ReLU ->
  attention -> 3x3 conv + BN + ReLU -> dropout2d 0.1 + 1x1 conv to 1024) with no attention
  ("before"), channel attention (CAM) and position attention (PAM), summed, then dropout2d
  0.1 + 1x1 conv -> average pooling -> a 1024-d part feature with its own classifier.
The test feature (and the anchor loss's target) is the concatenation of the global and the
part features (3 x 1024). Parameters, 751 classes: 69.18 M.

Diversity regularisers, returned as already weighted `aux_losses` while training:
- "of" (orthogonality of features): for each feature map M (C x HW) the spectral gap
  lambda_max(M M^T) - lambda_min(M M^T), both from one power-iteration step (SVD-free, as the
  reference); summed over the batch and scaled to a batch of 32 (reference quirk), averaged
  over the parts at each position (before, cam, pam, after), the shallow CAM output
  ("intermediate") at 1/100 weight; weight `of_weight` (reference --of-beta 1e-6), from
  epoch `of_start_epoch` (23) on, see `set_epoch`.
- "ow" (orthogonality of weights): for convolution filters W (out x in*k*k),
  10 * (lambda_max(W W^T) - lambda_min(W W^T))^2, summed; weight `ow_weight` (reference
  --ow-beta 1e-3). The paper applies it to every backbone conv (stem, stages 1-3, both
  stage-4 copies: `ow_scope="backbone"`), but the reference code's module walk stops at
  residual blocks and so reaches only the stem conv (`ow_scope="stem"`, the default, which
  produced the published numbers). At initialisation the "backbone" sum is about 9 at
  full width, larger than the cross-entropy, the "stem" term about 1e-4.
The power iteration starts from a fixed vector instead of the reference's random one, so
the loss is deterministic.

Recipe (the reference's published command): 384x128, P x K = 16 x 4, Adam lr 3e-4, weight decay
5e-4, 80 epochs, x0.1 at epochs 20 and 40, label-smoothed cross-entropy plus batch-hard
triplet (margin 1.2, weight 0.1), each averaged over the three outputs (here: ce_weight 1/3,
triplet_weight 0.1/3), random crop + random erasing; its first 10 epochs train only the new
layers (not available in our trainer).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .output import ReIDOutput
from .resnet import ResNet, set_stage_stride

FEATURE_POSITIONS = ("before", "cam", "pam", "after")
INTERMEDIATE_FACTOR = 0.01
OF_REFERENCE_BATCH = 32
OW_SCALE = 10.0


def _init_new_layers(module: nn.Module) -> None:
    # The reference's init_params for everything that is not ImageNet-pretrained.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ChannelAttention(nn.Module):
    """CAM: reweight channels by their (inverted, softmaxed) Gram affinities; gamma starts at 0."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        energy = flat @ flat.transpose(1, 2)
        # Subtracting from the row maximum makes the least similar channels weigh most.
        attention = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
        out = (attention @ flat).reshape(b, c, h, w)
        return self.gamma * out + x


class PositionAttention(nn.Module):
    """PAM: self-attention over spatial positions with C/8-d queries and keys; gamma starts at 0."""

    def __init__(self, channels: int):
        super().__init__()
        if channels < 8:
            raise ValueError(f"position attention needs at least 8 channels, got {channels}")
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query_conv(x).reshape(b, -1, h * w).transpose(1, 2)
        k = self.key_conv(x).reshape(b, -1, h * w)
        attention = (q @ k).softmax(dim=-1)
        v = self.value_conv(x).reshape(b, c, h * w)
        out = (v @ attention.transpose(1, 2)).reshape(b, c, h, w)
        return self.gamma * out + x


class AttentionHead(nn.Module):
    """DANet head: 3x3 conv to in/2 + BN + ReLU -> attention -> 3x3 conv + BN + ReLU -> dropout2d + 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, attention: nn.Module | None):
        super().__init__()
        inter = in_ch // 2
        self.conv5c = nn.Sequential(nn.Conv2d(in_ch, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU())
        self.attention_module = attention if attention is not None else nn.Identity()
        self.conv52 = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU())
        self.conv7 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv7(self.conv52(self.attention_module(self.conv5c(x))))


def _start_vector(n: int, like: torch.Tensor) -> torch.Tensor:
    # Fixed and non-constant, so it is (almost surely) not orthogonal to the wanted eigenvector.
    i = torch.arange(1, n + 1, device=like.device, dtype=like.dtype)
    return (1.0 + 0.5 * torch.sin(i)).unsqueeze(-1)


def _dominant_eigenvalue(a: torch.Tensor) -> torch.Tensor:
    """Rayleigh quotient after one power step: the reference's estimate of the largest-|.| eigenvalue."""
    ax = a @ _start_vector(a.shape[-1], a)
    aax = a @ ax
    return (aax * ax).sum(dim=(-2, -1)) / (ax * ax).sum(dim=(-2, -1)).clamp_min(1e-12)


def spectral_gap(gram: torch.Tensor) -> torch.Tensor:
    """Estimated lambda_max - lambda_min of symmetric PSD matrices (..., N, N), SVD-free.

    The smallest eigenvalue comes from the dominant one of ``gram - lambda_max * I``.
    """
    largest = _dominant_eigenvalue(gram)
    eye = torch.eye(gram.shape[-1], device=gram.device, dtype=gram.dtype)
    shifted = gram - largest[..., None, None] * eye
    smallest = _dominant_eigenvalue(shifted) + largest
    return largest - smallest


def feature_orthogonality(fmap: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each map's spectral gap of M M^T (M: C x HW), scaled to a batch of 32."""
    with torch.autocast(device_type=fmap.device.type, enabled=False):
        m = fmap.float().flatten(2)
        gap = spectral_gap(m @ m.transpose(1, 2))
    return gap.sum() * (OF_REFERENCE_BATCH / fmap.shape[0])


def weight_orthogonality(weight: torch.Tensor) -> torch.Tensor:
    """10 * (spectral gap of W W^T)^2 for filters W (out x in*k*k); 0 for a single filter."""
    if weight.shape[0] < 2:
        return weight.new_zeros((), dtype=torch.float32)
    with torch.autocast(device_type=weight.device.type, enabled=False):
        w = weight.float().flatten(1)
        return OW_SCALE * spectral_gap(w @ w.T) ** 2


class ABDNet(nn.Module):
    """Shared ResNet stem with shallow CAM, a global branch and an attentive part branch.

    Args:
        trunk: a ResNet (weights already loaded); stage 4 is copied twice with stride 1.
        num_classes: number of training identities.
        num_parts: horizontal parts of the attentive branch (ABD-Net: 2).
        embed_dim: width of the global and of each part feature (ABD-Net: 1024).
        dropout: dropout before the global classifier (ABD-Net: 0.5).
        of_weight: weight of the feature orthogonality term (0 switches it off).
        ow_weight: weight of the weight orthogonality term (0 switches it off).
        of_start_epoch: first epoch (0-based) with the feature term, see `set_epoch`.
        ow_scope: "stem" (the reference code's effective scope) or "backbone" (the paper's).
    """

    def __init__(
        self,
        trunk: ResNet,
        num_classes: int,
        num_parts: int = 2,
        embed_dim: int = 1024,
        dropout: float = 0.5,
        of_weight: float = 1e-6,
        ow_weight: float = 1e-3,
        of_start_epoch: int = 23,
        ow_scope: str = "stem",
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if num_parts < 1:
            raise ValueError(f"num_parts must be at least 1, got {num_parts}")
        if ow_scope not in ("stem", "backbone"):
            raise ValueError(f"ow_scope must be 'stem' or 'backbone', got {ow_scope!r}")
        self.num_parts = num_parts
        self.ow_scope = ow_scope
        self.of_weight, self.ow_weight, self.of_start_epoch = of_weight, ow_weight, of_start_epoch
        self.of_active = True
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1)
        self.shallow_cam = ChannelAttention()
        self.mid = nn.Sequential(trunk.layer2, trunk.layer3)
        channels = trunk.out_channels
        self.global_conv5 = copy.deepcopy(trunk.layer4)
        self.abd_conv5 = copy.deepcopy(trunk.layer4)
        for stage in (self.global_conv5, self.abd_conv5):
            set_stage_stride(stage, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.global_fc = nn.Sequential(nn.Linear(channels, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))
        self.global_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.global_classifier = nn.Linear(embed_dim, num_classes)
        self.reduction = nn.Sequential(
            nn.Conv2d(channels, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True)
        )
        self.before_head = AttentionHead(embed_dim, embed_dim, None)
        self.cam_head = AttentionHead(embed_dim, embed_dim, ChannelAttention())
        self.pam_head = AttentionHead(embed_dim, embed_dim, PositionAttention(embed_dim // 2))
        self.sum_conv = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(embed_dim, embed_dim, 1))
        self.part_classifiers = nn.ModuleList(nn.Linear(embed_dim, num_classes) for _ in range(num_parts))
        for new in (self.global_fc, self.global_classifier, self.reduction, self.before_head, self.cam_head,
                    self.pam_head, self.sum_conv, self.part_classifiers):
            _init_new_layers(new)
        self.embedding_dim = (1 + num_parts) * embed_dim
        self.branch_feature_dim = embed_dim

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the 0-based training epoch: the feature term starts at `of_start_epoch`.

        Without a call the feature term is on.
        """
        self.of_active = epoch >= self.of_start_epoch

    def regularised_convs(self) -> list[nn.Conv2d]:
        """The convolutions the weight orthogonality term regularises (per `ow_scope`)."""
        if self.ow_scope == "stem":
            return [self.stem[0]]
        return [m for part in (self.stem, self.mid, self.global_conv5, self.abd_conv5)
                for m in part.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        intermediate = self.shallow_cam(self.stem(x))
        x = self.mid(intermediate)
        g = self.global_fc(self.pool(self.global_conv5(x)).flatten(1))
        g_dropped = self.global_dropout(g)
        features, embeddings, logits = [g_dropped], [g], [self.global_classifier(g_dropped)]
        fmaps: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURE_POSITIONS}
        reduced = self.reduction(self.abd_conv5(x))
        if reduced.shape[2] < self.num_parts:
            raise ValueError(
                f"the attentive branch's map is {reduced.shape[2]} rows high, fewer than num_parts={self.num_parts}; "
                f"use a taller input (ABD-Net: 384x128)"
            )
        for part, classifier in zip(torch.tensor_split(reduced, self.num_parts, dim=2), self.part_classifiers):
            heads = {"before": self.before_head(part), "cam": self.cam_head(part), "pam": self.pam_head(part)}
            after = self.sum_conv(heads["before"] + heads["cam"] + heads["pam"])
            for k, v in (*heads.items(), ("after", after)):
                fmaps[k].append(v)
            v = self.pool(after).flatten(1)
            features.append(v)
            embeddings.append(v)
            logits.append(classifier(v))
        aux: dict[str, torch.Tensor] = {}
        if self.training and self.of_weight > 0 and self.of_active:
            of = sum(sum(feature_orthogonality(f) for f in maps) / len(maps) for maps in fmaps.values())
            of = of + INTERMEDIATE_FACTOR * feature_orthogonality(intermediate)
            aux["of"] = self.of_weight * of
        if self.training and self.ow_weight > 0:
            aux["ow"] = self.ow_weight * sum(weight_orthogonality(c.weight) for c in self.regularised_convs())
        return ReIDOutput(features=features, embeddings=embeddings, logits=logits, aux_losses=aux)
