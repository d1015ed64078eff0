//! Conversions between `mesh.net` addresses and `std::net`.

use crate::net::{ip_address::Ip, IpAddress, TcpAddress};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A wire address that does not name an IP address and port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAddress {
    #[error("address has no IP")]
    MissingIp,
    #[error("IPv6 address has {0} bytes, expected 16")]
    Ipv6Length(usize),
    #[error("port {0} is out of range")]
    Port(u32),
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V4(v4) => Ip::Ipv4(u32::from(v4)),
            IpAddr::V6(v6) => Ip::Ipv6(v6.octets().to_vec()),
        };
        IpAddress { ip: Some(ip) }
    }
}

impl TryFrom<&IpAddress> for IpAddr {
    type Error = InvalidAddress;
    fn try_from(ip: &IpAddress) -> Result<Self, InvalidAddress> {
        match &ip.ip {
            Some(Ip::Ipv4(v4)) => Ok(IpAddr::V4(Ipv4Addr::from(*v4))),
            Some(Ip::Ipv6(bytes)) => {
                let octets: [u8; 16] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| InvalidAddress::Ipv6Length(bytes.len()))?;
                Ok(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            None => Err(InvalidAddress::MissingIp),
        }
    }
}

impl From<SocketAddr> for TcpAddress {
    fn from(addr: SocketAddr) -> Self {
        TcpAddress {
            ip: Some(addr.ip().into()),
            port: u32::from(addr.port()),
        }
    }
}

impl TryFrom<&TcpAddress> for SocketAddr {
    type Error = InvalidAddress;
    fn try_from(addr: &TcpAddress) -> Result<Self, InvalidAddress> {
        let ip = IpAddr::try_from(addr.ip.as_ref().ok_or(InvalidAddress::MissingIp)?)?;
        let port = u16::try_from(addr.port).map_err(|_| InvalidAddress::Port(addr.port))?;
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for s in ["198.18.0.1:80", "[2001:db8::1]:8080", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            let wire = TcpAddress::from(a);
            assert_eq!(SocketAddr::try_from(&wire).unwrap(), a);
        }
        // 198.18.0.1 in network byte order, as the proto documents.
        let wire = TcpAddress::from("198.18.0.1:80".parse::<SocketAddr>().unwrap());
        assert_eq!(wire.ip.unwrap().ip, Some(Ip::Ipv4(0xc612_0001)));
    }

    #[test]
    fn bad_wire_addresses_are_errors() {
        let no_ip = TcpAddress { ip: None, port: 1 };
        assert_eq!(SocketAddr::try_from(&no_ip), Err(InvalidAddress::MissingIp));
        let short = TcpAddress {
            ip: Some(IpAddress {
                ip: Some(Ip::Ipv6(vec![1, 2, 3])),
            }),
            port: 1,
        };
        assert_eq!(
            SocketAddr::try_from(&short),
            Err(InvalidAddress::Ipv6Length(3))
        );
        let big_port = TcpAddress {
            ip: Some(IpAddr::from([1, 2, 3, 4]).into()),
            port: 70_000,
        };
        assert_eq!(
            SocketAddr::try_from(&big_port),
            Err(InvalidAddress::Port(70_000))
        );
    }
}
