//! tickwire broker.
