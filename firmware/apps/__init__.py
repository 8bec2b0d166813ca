# Reference accessories (phone mount, ambient sensor, controller), one package
# each; an app builds its capabilities from the core's model and drives them
# from the drivers. Added by the firmware issue.
