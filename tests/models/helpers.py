"""Constants shared by the model-specific tests (test_base, test_siamese, test_semantic_change)."""

NUM_CLASSES = 5
# A shallow resnet18 (3 stages) keeps training-style tests fast.
SMALL = {"encoder_depth": 3, "decoder_channels": (64, 32, 16)}
