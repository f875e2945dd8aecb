"""Modbus TCP/RTU: register codec (pure), the pymodbus client driver, and a simulator."""
