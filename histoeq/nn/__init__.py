"""Equivariant building blocks in plain PyTorch: groups, filter transforms, layers. Pure math, no I/O."""

from histoeq.nn.conv import GroupConv2d, LiftingConv2d
from histoeq.nn.functional import rotate_image, transform_feature_map, transform_image
from histoeq.nn.groups import Group, by_name, cyclic, dihedral, trivial
from histoeq.nn.kernels import kernel_transforms
from histoeq.nn.norm import GroupBatchNorm2d, fuse_conv_bn
from histoeq.nn.pool import EquivariantPool2d, GroupPool

__all__ = [
    "EquivariantPool2d", "Group", "GroupBatchNorm2d", "GroupConv2d", "GroupPool", "LiftingConv2d", "by_name",
    "cyclic", "dihedral", "fuse_conv_bn", "kernel_transforms", "rotate_image", "transform_feature_map",
    "transform_image", "trivial",
]
