

# Frameworks whose engine spreads one process over several devices itself (--device 0,1): Keras with
# tf.distribute.MirroredStrategy. The others (torch) get one process per device from torchrun.
IN_PROCESS_MULTI_DEVICE = frozenset({"keras"})
