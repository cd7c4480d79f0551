"""The SDK's version, as stated in ``Hello.sdk`` (a test keeps it equal to the package's)."""

__all__ = ["SDK_NAME", "__version__"]

__version__ = "0.1.0"

#: What the task says it is in its ``Hello``.
SDK_NAME = f"taskvisor-python/{__version__}"
