"""Stage 2 of the method (reserved): the memory-augmented GAN refiner and pose-matched backgrounds.
May import ``tracking``, ``persona``, ``heads``, ``audio`` and the base.
"""
