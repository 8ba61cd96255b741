"""Weight initialisation of the CUT networks (reference: xavier-normal with gain 0.02, zero biases)."""

from __future__ import annotations

from torch import nn

from ..checks import check_choice

INIT_TYPES = ("xavier", "normal", "kaiming", "orthogonal")


def init_weights(net: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> nn.Module:
    """Initialise every Conv/Linear weight of ``net`` in place (biases to zero); BatchNorm weights ~ N(1, gain).

    Returns ``net``. Fixed buffers (the blur filters) are untouched.
    """
    check_choice("init_type", init_type, INIT_TYPES)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
