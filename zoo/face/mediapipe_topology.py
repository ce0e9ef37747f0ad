"""Named vertex sets of MediaPipe's 468-vertex face mesh (the topology of `canonical_face_model.obj`).

Index lists follow MediaPipe's `face_mesh_connections` (eye and lip contours) and TEASER's
`datasets/base_dataset.py` (the 105 points FLAME's MediaPipe embedding uses). "Right"/"left" are the subject's: the
right eye is on the image's left in a frontal photo.
"""

from __future__ import annotations

__all__ = [
    "FLAME_MP105",
    "LEFT_EYE_LOWER",
    "LEFT_EYE_UPPER",
    "LEFT_LID_CREASE",
    "LIPS_INNER_LOWER",
    "LIPS_INNER_UPPER",
    "MOUTH_REGION",
    "NUM_MESH_VERTICES",
    "RIGHT_EYE_LOWER",
    "RIGHT_EYE_UPPER",
    "RIGHT_LID_CREASE",
]

NUM_MESH_VERTICES = 468  # the refined model adds 10 iris points (468..477), which have no mesh triangles

# the 105 MediaPipe points of FLAME's `mediapipe_landmark_embedding.npz`, in its order (TEASER `mediapipe_indices`)
FLAME_MP105 = (
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336, 46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 249, 263, 362, 373,
    374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466, 7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159,
    160, 161, 163, 173, 246, 168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358, 0, 13, 14, 17, 37, 39, 40, 61, 78,
    80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318,
    321, 324, 375, 402, 405, 409, 415,
)

# eyelids, outer corner to inner corner; upper[i] closes onto lower[i]
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
# the ring above each upper lid (the lid crease), same order
RIGHT_LID_CREASE = (247, 30, 29, 27, 28, 56, 190)
LEFT_LID_CREASE = (467, 260, 259, 257, 258, 286, 414)

# inner lip contours, right corner to left corner
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

# points whose box is the mouth region of the region loss when no 68-point landmarks exist (outer lips)
MOUTH_REGION = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
