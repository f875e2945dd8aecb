"""OPC UA: value codec (pure), the asyncua driver, certificates, and a reactor simulator."""
