# Chip drivers (SHT4x, SCD4x, BH1750, MCP2515, motor, encoder, ...). A driver
# takes I2C/SPI/Pin objects and never creates them. Added by the firmware issue.
