"""Conversions between messages/files and numpy; never imports rclpy."""
