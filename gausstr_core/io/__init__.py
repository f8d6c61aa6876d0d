"""Files of models: ``checkpoint`` (safetensors + JSON metadata, never unpickled) and
``convert_official`` (hustvl/GaussTR .pth -> this model, ``gausstr-convert-official``).
"""
