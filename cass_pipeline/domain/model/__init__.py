"""The classifier: patient splits, ShuffleNet V2, the view dataset, training and inference."""
