"""torchvision.datasets: the dataset classes timm's dataset factory imports unconditionally
(the optional ones, Places365, INaturalist, QMNIST and ImageNet, are left out: timm imports
them inside try/except ImportError)."""

from torchvision._refuse import placeholder_class

CIFAR10 = placeholder_class(__name__, "CIFAR10")
CIFAR100 = placeholder_class(__name__, "CIFAR100")
MNIST = placeholder_class(__name__, "MNIST")
KMNIST = placeholder_class(__name__, "KMNIST")
FashionMNIST = placeholder_class(__name__, "FashionMNIST")
ImageFolder = placeholder_class(__name__, "ImageFolder")
