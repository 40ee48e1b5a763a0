"""The offline trainer: datasets, objectives, the training loop, evaluation metrics and export.

Never imports rclpy. Heavy dependencies (accelerate, diffusers, h5py, tensorboard) are imported
where they are used, so ``import lotus2_ros.train`` stays cheap.
"""
