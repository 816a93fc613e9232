"""The choices the commands' options offer, importable without torch or matplotlib.

``flatscape CMD --help`` must not load the libraries, so the option declarations read
their choices from here; tests/cli/test_startup.py checks that each equals the library's
own constant (the one place it is defined).
"""

KINDS = ("line", "contour", "filled", "heatmap", "surface3d")  # landscape.surface.plot.KINDS
PRESETS = ("full", "quick", "regimes", "sweep")  # sorted(cli.study.experiment.PRESETS) + sweep
GEOMETRIES = ("plain", "elementwise", "filterwise")  # landscape.sharpness.GEOMETRIES
SPLITS = ("train", "test", "both")  # landscape.surface.store.SPLITS
VECTORIZE = ("auto", "always", "never")  # landscape.surface.evaluate.VECTORIZE
TRAINING_LOSSES = ("cross_entropy", "causal_lm", "token_ce")  # distill.trainer.TRAINING_LOSSES
DATASETS = (  # distill.data.DATASETS
    "mnist1d", "digits", "synthetic", "tokens", "cifar10", "cifar100",
)  # fmt: skip
ARCHITECTURES = (  # sorted(distill.models.ARCHITECTURES)
    "cnn1d", "gpt", "lenet", "mlp", "resnet18", "resnet20", "resnet32", "resnet56", "vgg", "vit",
)  # fmt: skip
ALPHA_MEANING = (  # distill.losses.ALPHA_MEANING
    "alpha weights the distillation term: loss = (1 - alpha) * CE(student, labels) + "
    "alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)), KL summed over classes "
    "and averaged over the batch; alpha = 1 is pure self-distillation (labels unused), "
    "alpha = 0 is plain training on labels"
)
