# EasyEdit's models/__init__ imports every method; one of them fails on transformers 5. The fake fails the same
# way, so a test sees whether the adapter imported only the chosen method's package.
raise ImportError("cannot import name 'modeling_attn_mask_utils' from 'transformers' (fake easyeditor.models)")
