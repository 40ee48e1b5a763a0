"""Model code: weight loading, Lotus-2 core predictor, LCM, detail sharpener, Lotus-1,
prompt-embedding cache, resize policy and the tiny model builder.

Never imports rclpy.
"""
