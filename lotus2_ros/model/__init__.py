"""Model code behind the backend interface (:mod:`.backend`): the model families' networks and stages.

``spec`` (what a model folder is and defaults to; torch-free), ``backend`` (the interface the
perception pipeline uses, and ``load_backend``), ``engine`` (the Lotus-2 backend: FLUX transformer
with per-task core-predictor and detail-sharpener LoRA, LCM; the base-model loader the trainer
shares), ``weights``, ``prompt_embeds``, ``resize``, ``latents``, ``tiny`` (tiny random models).

Never imports rclpy.
"""
