//! Universal restore (see issue "Universal restore").
