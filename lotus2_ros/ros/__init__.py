"""The ROS 2 shell: rclpy nodes, parameters, QoS, diagnostics. The only package that imports rclpy."""
