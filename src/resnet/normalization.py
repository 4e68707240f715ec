"""Per-channel normalisation constants shared by weights, data and tasks."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
# Caffe's ImageNet mean in BGR order on 0-255 pixels, no std: He et al.'s released ResNets and
# Keras' v1 ResNets (keras.applications.resnet.preprocess_input, "caffe" mode) expect it.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
