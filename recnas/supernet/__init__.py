"""The weight-sharing supernet and standalone subnets of the NASRec space."""

from recnas.supernet.net import NASRecNet, Subnet, Supernet, inherit_weights

__all__ = ["NASRecNet", "Subnet", "Supernet", "inherit_weights"]
