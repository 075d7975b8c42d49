"""torchvision's datasets by name, and the splits `name:split` may ask for (light: no torch)."""

NAMED_SPLITS = {  # the first split is the default
    "cifar10": ("train", "test"), "cifar100": ("train", "test"),
    "stl10": ("train+unlabeled", "train", "test", "unlabeled"),
}
NAMED_DATASETS = tuple(NAMED_SPLITS)
DATASET_NAMES_HELP = ("a torchvision dataset by name, downloaded once into BYOL_DATA_DIR: cifar10, cifar100 or stl10, "
                      "optionally with a split after a colon: cifar10:test, stl10:train (labelled), stl10:unlabeled, "
                      "stl10:train+unlabeled (the default for stl10; its unlabelled images carry no label)")
