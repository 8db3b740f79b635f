"""Training of the image captioner: the loop, the objectives, the scenes pre-training, and the
optimiser step shared with the text trainer."""
