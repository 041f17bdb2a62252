"""Files facerec writes and reads on both sides of training: the training checkpoint (one layout,
:mod:`~facerec.files.checkpoint`), the guarded ``.pt`` reader (:mod:`~facerec.files.pt_file`)
and JSON a user may supply. Every reader treats the file as data (nothing is unpickled or run).
"""
