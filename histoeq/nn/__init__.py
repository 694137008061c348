"""Equivariant building blocks in plain PyTorch: groups, their action on images, filter transforms, layers. Pure
math, no I/O."""

from histoeq.nn.actions import (
    D4,
    element_in,
    exact_subgroup,
    rotate_image,
    subgroup_elements,
    transform_array,
    transform_feature_map,
    transform_image,
)
from histoeq.nn.conv import GroupConv2d, LiftingConv2d
from histoeq.nn.groups import Group, by_name, cyclic, dihedral, trivial
from histoeq.nn.kernels import kernel_transforms
from histoeq.nn.norm import GroupBatchNorm2d, fuse_conv_bn
from histoeq.nn.pool import EquivariantPool2d, GroupPool

__all__ = [
    "D4", "EquivariantPool2d", "Group", "GroupBatchNorm2d", "GroupConv2d", "GroupPool", "LiftingConv2d", "by_name",
    "cyclic", "dihedral", "element_in", "exact_subgroup", "fuse_conv_bn", "kernel_transforms", "rotate_image",
    "subgroup_elements", "transform_array", "transform_feature_map", "transform_image", "trivial",
]
