"""The generators: the staged-generator contract, StyleGAN2 and DCGAN, their layers, checkpoint readers."""
